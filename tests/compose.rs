//! `docker-compose.yml`, checked without Docker: the file must stay in step with the
//! binaries and with `scripts/up.sh` even on a machine where no container can run.
//!
//! - every service has an image or a build, and a healthcheck;
//! - every `depends_on` waits for a service that exists and has a healthcheck;
//! - every orderflow service runs a binary the workspace builds, and its healthcheck asks
//!   that same binary;
//! - every environment variable set on an orderflow service is one the code reads, and
//!   every `ORDERFLOW_*` variable `scripts/up.sh` sets is one the compose file sets too;
//! - no two published host ports clash, and the scaled consumers publish none.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde_yaml::Value;

const ORDERFLOW_SERVICES: [&str; 5] = ["order", "payment", "points", "sms", "logging"];
/// Services `docker-compose up --scale NAME=3` must work for.
const SCALED: [&str; 3] = ["payment", "points", "sms"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let text =
        std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    let mut value: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
    // `<<: *service` merges, as docker-compose does.
    value.apply_merge().expect("merge keys resolve");
    value
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("a services mapping")
        .iter()
        .map(|(name, service)| {
            let mut service = service.clone();
            service.apply_merge().expect("nested merge keys resolve");
            (name.as_str().unwrap().to_owned(), service)
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every Rust source file of the workspace (not target/).
fn sources() -> String {
    fn walk(dir: &Path, text: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && name != ".git" && name != "tests" {
                walk(&path, text);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut text = String::new();
    for dir in ["src", "shared", "services"] {
        walk(&root().join(dir), &mut text);
    }
    text
}

/// The binaries the workspace builds: the CLI and `<service>-service` for each service.
fn workspace_binaries() -> BTreeSet<String> {
    let mut binaries = BTreeSet::from(["orderflow".to_owned()]);
    for service in ORDERFLOW_SERVICES {
        let manifest =
            std::fs::read_to_string(root().join("services").join(service).join("Cargo.toml"))
                .unwrap();
        let binary = format!("{service}-service");
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "services/{service} builds {binary}"
        );
        binaries.insert(binary);
    }
    binaries
}

#[test]
fn every_service_has_an_image_and_a_healthcheck_and_waits_for_healthy_dependencies() {
    let compose = compose();
    let services = services(&compose);
    for service in ORDERFLOW_SERVICES
        .iter()
        .chain(&["postgres", "rabbitmq", "kafka"])
    {
        assert!(
            services.contains_key(*service),
            "docker-compose.yml has no `{service}`"
        );
    }
    for (name, service) in &services {
        assert!(
            service.get("image").is_some() || service.get("build").is_some(),
            "`{name}` has neither image nor build"
        );
        let is_tool = strings(&service["profiles"]).contains(&"tools".to_owned());
        if !is_tool {
            assert!(
                !strings(&service["healthcheck"]["test"]).is_empty(),
                "`{name}` has no healthcheck test"
            );
        }
        if let Some(dependencies) = service.get("depends_on").and_then(Value::as_mapping) {
            for (dependency, condition) in dependencies {
                let dependency = dependency.as_str().unwrap();
                assert!(
                    services.contains_key(dependency),
                    "`{name}` depends on unknown `{dependency}`"
                );
                assert_eq!(
                    condition["condition"].as_str(),
                    Some("service_healthy"),
                    "`{name}` must wait for `{dependency}` to be healthy, not merely started"
                );
            }
        }
    }
    // Infrastructure comes from official images with pinned versions.
    for infrastructure in ["postgres", "rabbitmq", "kafka"] {
        let image = services[infrastructure]["image"].as_str().unwrap();
        let tag = image.split_once(':').map(|(_, tag)| tag).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest",
            "`{infrastructure}` image {image} is not pinned"
        );
    }
    // One service builds the image; the others reuse it.
    let builders: Vec<&String> = services
        .iter()
        .filter(|(_, service)| service.get("build").is_some())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        builders.len(),
        1,
        "exactly one service builds the shared image: {builders:?}"
    );
}

#[test]
fn every_orderflow_service_runs_a_binary_the_workspace_builds() {
    let services = services(&compose());
    let binaries = workspace_binaries();
    for name in ORDERFLOW_SERVICES {
        let service = &services[name];
        let command = strings(&service["command"]);
        let binary = command
            .first()
            .unwrap_or_else(|| panic!("`{name}` has no command"));
        assert_eq!(
            binary,
            &format!("{name}-service"),
            "`{name}` runs its own binary"
        );
        assert!(binaries.contains(binary));
        let healthcheck = strings(&service["healthcheck"]["test"]);
        assert_eq!(
            healthcheck,
            vec!["CMD".to_owned(), binary.clone(), "healthcheck".to_owned()]
        );
        assert_eq!(service["image"].as_str(), Some("orderflow:latest"));
    }
    let reconcile = strings(&services["reconcile"]["command"]);
    assert_eq!(reconcile, vec!["orderflow", "reconcile"]);
}

#[test]
fn environment_names_are_the_ones_the_binaries_read_and_match_up_sh() {
    let services = services(&compose());
    let code = sources();
    let mut compose_variables = BTreeSet::new();
    for name in ORDERFLOW_SERVICES.iter().chain(&["reconcile"]) {
        let environment = services[*name]["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("`{name}` has an environment mapping"));
        for (variable, _) in environment {
            let variable = variable.as_str().unwrap();
            assert!(
                code.contains(&format!("\"{variable}\"")),
                "`{name}` sets {variable}, which no binary reads"
            );
            compose_variables.insert(variable.to_owned());
        }
        if *name != "reconcile" {
            for required in ["ORDERFLOW_BROKER", "DATABASE_URL", "ORDERFLOW_HTTP_ADDR"] {
                assert!(
                    environment.contains_key(required),
                    "`{name}` does not set {required}"
                );
            }
            let database = environment[&Value::from("DATABASE_URL")].as_str().unwrap();
            assert!(
                database.ends_with(&format!("/orderflow_{name}")),
                "`{name}` owns its database (as in scripts/up.sh): {database}"
            );
        }
    }
    let up = std::fs::read_to_string(root().join("scripts/up.sh")).unwrap();
    for word in up.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        let is_service_setting = word.starts_with("ORDERFLOW_")
            && up.contains(&format!("{word}=\""))
            && !["ORDERFLOW_INSTANCE"].contains(&word);
        if is_service_setting {
            assert!(
                compose_variables.contains(word),
                "scripts/up.sh sets {word} but docker-compose.yml does not"
            );
        }
    }
    for database_name in ORDERFLOW_SERVICES {
        assert!(
            up.contains("orderflow_$service"),
            "scripts/up.sh names databases orderflow_<service> ({database_name})"
        );
    }
}

#[test]
fn host_ports_do_not_clash_and_scaled_services_publish_none() {
    let services = services(&compose());
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    for (name, service) in &services {
        for mapping in strings(&service["ports"]) {
            // "127.0.0.1:8080:8080" or "8080:8080": the host side is all but the last part.
            let (host, _container) = mapping
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("`{name}` publishes {mapping} without a host port"));
            let host_port = host.rsplit(':').next().unwrap().to_owned();
            if let Some(other) = taken.insert(host_port.clone(), name.clone()) {
                panic!("host port {host_port} is published by both `{other}` and `{name}`");
            }
        }
    }
    for name in SCALED {
        assert!(
            strings(&services[name]["ports"]).is_empty(),
            "`{name}` publishes a host port, so `--scale {name}=3` would clash"
        );
    }
    assert!(
        taken.contains_key("8080"),
        "the order API is published on 8080 as scripts/up.sh serves it"
    );
}
