//! JSON request bodies whose refusals say which field is wrong.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header, HeaderMap, StatusCode},
};
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON request body as `T`, or an [`ApiError`] that says what is wrong — the same JSON
/// error body as every other answer, where axum's own `Json` answers in plain text. The
/// refusals, in the order they are checked:
///
/// | problem | status | `field` |
/// | --- | --- | --- |
/// | `Content-Type` not `application/json` (or `application/*+json`) | 415 | — |
/// | body over the route's `DefaultBodyLimit` | 413 | — |
/// | empty, not JSON, truncated, or anything after the value | 400 | — |
/// | a field missing, unknown (`deny_unknown_fields`) or of the wrong type | 422 | its JSON path, e.g. `items[1].quantity` |
/// | the body not of `T`'s shape at all (an array for an object) | 422 | where it went wrong, if anywhere |
///
/// Rules serde cannot express (a range, a relation between fields) are the handler's.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        require_json_content_type(request.headers())?;
        let body =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body is larger than this route accepts",
                    ),
                    status => ApiError::new(
                        status,
                        format!("could not read the request body: {rejection}"),
                    ),
                })?;
        parse_json(&body).map(JsonBody)
    }
}

/// 415 unless `Content-Type` says JSON (`application/json`, `application/problem+json`, …;
/// parameters such as `charset` and letter case do not matter).
pub fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ))
    }
}

/// `body` as `T`, or the 400 / 422 [`JsonBody`] describes, naming the field to blame.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "request body is empty: expected a JSON value",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // serde_path_to_error tracks where the deserializer was when it failed, which is
    // the JSON path a client can act on (`items[2].quantity`).
    let value: T = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| describe_json_error(error.path().to_string(), error.into_inner()))?;
    // Anything after the value (`{…} {…}`) is malformed, not ignored.
    deserializer
        .end()
        .map_err(|error| describe_json_error(String::new(), error))?;
    Ok(value)
}

/// serde_json's error at `path`, as a status and the field it is about.
fn describe_json_error(path: String, error: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = error.to_string();
    // serde_json appends " at line L column C": useful for a syntax error, noise for a
    // field that is already named.
    let message = text
        .rfind(" at line ")
        .map_or(text.as_str(), |position| &text[..position]);
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request body is not valid JSON: {text}"),
        ),
        Category::Data => {
            // The root is "." on the path; a field directly in it has no parent.
            let parent = if path == "." { String::new() } else { path };
            let child = |name: &str| {
                if parent.is_empty() {
                    name.to_owned()
                } else {
                    format!("{parent}.{name}")
                }
            };
            // serde names a missing or unknown field only inside its message, in
            // backticks; the path points at the object that lacks (or has) it.
            if let Some(name) = backticked_after(message, "missing field `") {
                ApiError::invalid(child(name), format!("`{name}` is required"))
            } else if let Some(name) = backticked_after(message, "unknown field `") {
                // serde_path_to_error already puts the unknown key on the path.
                let field = if parent.ends_with(name) {
                    parent.clone()
                } else {
                    child(name)
                };
                ApiError::invalid(field, message)
            } else if parent.is_empty() {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("request body has the wrong shape: {message}"),
                )
            } else {
                ApiError::invalid(parent, message)
            }
        }
    }
}

/// `name` from a message starting with `prefix` followed by `name` and a backtick.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::Router;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read only through Debug: the tests are about what fails
    struct Order {
        user_id: u64,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        quantity: i64,
    }

    #[track_caller]
    fn refused(body: &str) -> ApiError {
        parse_json::<Order>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_well_formed_body_parses() {
        let order: Order =
            parse_json(br#"{"user_id": 7, "items": [{"sku": "tea", "quantity": 2}]}"#).unwrap();
        assert_eq!((order.user_id, order.items[0].quantity), (7, 2));
    }

    #[test]
    fn malformed_json_is_400_without_a_field() {
        for body in [
            r#"{"user_id": 1,"#,
            "not json",
            r#"{"user_id": 1, "items": []} {}"#,
            "",
            "  ",
        ] {
            let error = refused(body);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body:?}: {error:?}");
            assert_eq!(error.field, None, "{body:?}");
        }
    }

    #[test]
    fn missing_unknown_and_mistyped_fields_are_named_by_path() {
        let cases = [
            (r#"{"items": []}"#, "user_id"),
            (
                r#"{"user_id": 1, "items": [{"sku": "tea"}]}"#,
                "items[0].quantity",
            ),
            (r#"{"user_id": 1, "items": [], "coupon": "FREE"}"#, "coupon"),
            (
                r#"{"user_id": 1, "items": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 1, "colour": "red"}]}"#,
                "items[1].colour",
            ),
            (
                r#"{"user_id": 1, "items": [{"sku": "tea", "quantity": "two"}]}"#,
                "items[0].quantity",
            ),
            (r#"{"user_id": -5, "items": []}"#, "user_id"),
        ];
        for (body, field) in cases {
            let error = refused(body);
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(error.field.as_deref(), Some(field), "{body}: {error:?}");
            assert!(!error.message.is_empty());
        }
        // An array where an object was expected: the wrong shape, still a 422.
        let error = refused("[1, 2]");
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(require_json_content_type(&headers).is_err());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            require_json_content_type(&headers).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        for json in [
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(json));
            assert!(require_json_content_type(&headers).is_ok(), "{json}");
        }
    }

    #[tokio::test]
    async fn the_extractor_checks_type_then_size_then_json() {
        use axum::{extract::DefaultBodyLimit, routing::post};
        use raw_http::call;
        let router = Router::new()
            .route(
                "/",
                post(|JsonBody(order): JsonBody<Order>| async move { order.user_id.to_string() }),
            )
            .layer(DefaultBodyLimit::max(64));
        let good = r#"{"user_id": 7, "items": []}"#;
        let (status, _) = call(&router, "application/json", good).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(&router, "text/plain", good).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(body["error"].is_string(), "{body}");
        let padded = format!("{good}{}", " ".repeat(100));
        let (status, body) = call(&router, "application/json", &padded).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.get("field").is_none(), "{body}");
        let (status, body) = call(&router, "application/json", r#"{"items": []}"#).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["field"], "user_id");
    }

    /// One request over a real socket, as raw HTTP/1.0, to a router served for it.
    mod raw_http {
        use axum::{http::StatusCode, Router};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        pub async fn call(
            router: &Router,
            content_type: &str,
            body: &str,
        ) -> (StatusCode, serde_json::Value) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let router = router.clone();
            let server = tokio::spawn(async move { axum::serve(listener, router).await });
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let request = format!(
                "POST / HTTP/1.0\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            server.abort();
            let status: u16 = response
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .expect("a status line");
            let (_, body) = response.split_once("\r\n\r\n").unwrap_or_default();
            let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
            (StatusCode::from_u16(status).unwrap(), json)
        }
    }
}
