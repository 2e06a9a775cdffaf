//! `docker-compose.yml` and `docker-compose.kafka.yml`, checked without Docker: the files
//! must stay in step with the binaries, with `scripts/up.sh` and with `.env.example` even on
//! a machine where no container can run. Both take their services from
//! `docker/services.yml` with `extends`, resolved here as compose resolves it.
//!
//! - every service has an image or a build, and a healthcheck;
//! - on RabbitMQ the services wait for RabbitMQ, on Kafka for Kafka (and no RabbitMQ runs);
//! - every `depends_on` waits for a service that exists and has a healthcheck;
//! - every orderflow service runs a binary the workspace builds, and its healthcheck asks
//!   that same binary;
//! - every environment variable set on an orderflow service is one the code reads, and
//!   every `ORDERFLOW_*` variable `scripts/up.sh` sets is one the compose file sets too;
//! - no two published host ports clash, and the scaled consumers publish none;
//! - every `${VARIABLE}` the files read is in `.env.example`, with the same default.
//! - the `observability` profile, in both files: Prometheus scrapes every service's
//!   `/metrics` (one job per service, replicas found by DNS), and Grafana's dashboard
//!   queries only series the services export (`orderflow_kit::metrics::names`) from the
//!   provisioned data source.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde_norway::Value;

const ORDERFLOW_SERVICES: [&str; 5] = ["order", "payment", "points", "sms", "logging"];
/// Services `docker-compose up --scale NAME=3` must work for.
const SCALED: [&str; 3] = ["payment", "points", "sms"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The two compose files a user runs.
const RABBITMQ_FILE: &str = "docker-compose.yml";
const KAFKA_FILE: &str = "docker-compose.kafka.yml";
const FILES: [&str; 2] = [RABBITMQ_FILE, KAFKA_FILE];

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| panic!("{}", path.display()));
    let mut value: Value = serde_norway::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is YAML: {error}", path.display()));
    // `<<: *service` merges, as docker-compose does.
    value.apply_merge().expect("merge keys resolve");
    value
}

/// A compose file's services, each with its `extends` resolved.
fn services_of(file: &str) -> BTreeMap<String, Value> {
    let path = root().join(file);
    load(&path)["services"]
        .as_mapping()
        .expect("a services mapping")
        .iter()
        .map(|(name, service)| (name.as_str().unwrap().to_owned(), resolve(&path, service)))
        .collect()
}

/// `extends` as compose resolves it: the base service, with this one's keys on top
/// (mappings such as `environment` merged entry by entry); `depends_on` is never taken
/// from the base — docker-compose 1.29 refuses to extend a service that has one.
fn resolve(file: &Path, service: &Value) -> Value {
    let mut service = service.clone();
    service.apply_merge().expect("nested merge keys resolve");
    let Some(extends) = service.get("extends").cloned() else {
        return service;
    };
    let base_file = file
        .parent()
        .unwrap()
        .join(extends["file"].as_str().unwrap());
    let base_name = extends["service"].as_str().unwrap();
    let base = resolve(&base_file, &load(&base_file)["services"][base_name]);
    assert!(
        base.get("depends_on").is_none(),
        "{} `{base_name}` has depends_on, so it cannot be extended",
        base_file.display()
    );
    let mut merged = base.as_mapping().cloned().unwrap_or_default();
    for (key, value) in service.as_mapping().unwrap() {
        if key.as_str() == Some("extends") {
            continue;
        }
        match (merged.get_mut(key), value) {
            (Some(Value::Mapping(into)), Value::Mapping(entries)) => {
                for (entry, entry_value) in entries {
                    into.insert(entry.clone(), entry_value.clone());
                }
            }
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Mapping(merged)
}

/// `${NAME:-default}` → `default`, as compose fills it in when NAME is unset.
fn with_defaults(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closing brace") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
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
    for (file, broker) in [(RABBITMQ_FILE, "rabbitmq"), (KAFKA_FILE, "kafka")] {
        let services = services_of(file);
        for service in ORDERFLOW_SERVICES.iter().chain(&["postgres", broker]) {
            assert!(services.contains_key(*service), "{file} has no `{service}`");
        }
        every_service_is_complete(file, &services);
    }
}

#[test]
fn each_file_waits_for_its_own_broker_and_runs_no_other() {
    for (file, broker, other) in [
        (RABBITMQ_FILE, "rabbitmq", "kafka"),
        (KAFKA_FILE, "kafka", "rabbitmq"),
    ] {
        let services = services_of(file);
        assert!(!services.contains_key(other), "{file} runs `{other}` too");
        for name in ORDERFLOW_SERVICES {
            let dependencies: BTreeSet<&str> = services[name]["depends_on"]
                .as_mapping()
                .unwrap_or_else(|| panic!("{file}: `{name}` waits for nothing"))
                .keys()
                .map(|key| key.as_str().unwrap())
                .collect();
            assert_eq!(
                dependencies,
                BTreeSet::from(["postgres", broker]),
                "{file}: `{name}` waits for PostgreSQL and {broker}"
            );
            let url = with_defaults(
                services[name]["environment"]["ORDERFLOW_BROKER"]
                    .as_str()
                    .unwrap(),
            );
            assert!(
                url.contains(&format!("@{broker}:")) || url.contains(&format!("://{broker}:")),
                "{file}: `{name}` uses the broker {url}"
            );
        }
    }
}

fn every_service_is_complete(file: &str, services: &BTreeMap<String, Value>) {
    for (name, service) in services {
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
                    "{file}: `{name}` depends on unknown `{dependency}`"
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
    for infrastructure in ["postgres", "rabbitmq", "kafka", "prometheus", "grafana"] {
        let Some(service) = services.get(infrastructure) else {
            continue;
        };
        let image = service["image"].as_str().unwrap();
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
        "{file}: exactly one service builds the shared image: {builders:?}"
    );
}

#[test]
fn every_orderflow_service_runs_a_binary_the_workspace_builds() {
    let services = services_of(RABBITMQ_FILE);
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
    let services = services_of(RABBITMQ_FILE);
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
    for file in FILES {
        host_ports_of(file);
    }
}

fn host_ports_of(file: &str) {
    let services = services_of(file);
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    for (name, service) in &services {
        for mapping in strings(&service["ports"]) {
            // Published on loopback only, with the port a knob: 127.0.0.1:${NAME:-8080}:8080.
            assert!(
                mapping.starts_with("127.0.0.1:${ORDERFLOW_"),
                "{file}: `{name}` publishes {mapping}, not on loopback behind a knob"
            );
            let mapping = with_defaults(&mapping);
            // "127.0.0.1:8080:8080" or "8080:8080": the host side is all but the last part.
            let (host, _container) = mapping
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("`{name}` publishes {mapping} without a host port"));
            let host_port = host.rsplit(':').next().unwrap().to_owned();
            if let Some(other) = taken.insert(host_port.clone(), name.clone()) {
                panic!("{file}: host port {host_port} is published by both `{other}` and `{name}`");
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
        "{file}: the order API is published on 8080 as scripts/up.sh serves it"
    );
}

#[test]
fn every_variable_the_compose_files_read_is_in_env_example_with_its_default() {
    let example = std::fs::read_to_string(root().join(".env.example")).expect(".env.example");
    let documented: BTreeMap<&str, &str> = example
        .lines()
        .map(|line| line.trim_start_matches('#'))
        .filter_map(|line| line.split_once('='))
        .collect();
    let mut read = BTreeSet::new();
    for file in FILES
        .iter()
        .chain(&["docker/services.yml", "docker/observability.yml"])
    {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for (_, rest) in text
            .match_indices("${")
            .map(|(at, _)| ((), &text[at + 2..]))
        {
            let inner = &rest[..rest.find('}').unwrap()];
            let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
            read.insert(name.to_owned());
            let documented_default = documented
                .get(name)
                .unwrap_or_else(|| panic!("{file} reads {name}, which .env.example does not list"));
            assert_eq!(
                *documented_default, default,
                ".env.example gives {name} another default than {file}"
            );
        }
    }
    assert!(read.contains("ORDERFLOW_ORDER_PORT"), "{read:?}");
}

/// A file the observability services mount: `./x:/in/container[:ro]` in
/// docker/observability.yml, so relative to docker/. Returns the host path.
fn mounted(service: &Value, container_path: &str) -> std::path::PathBuf {
    let volume = strings(&service["volumes"])
        .into_iter()
        .find(|volume| volume.split(':').nth(1) == Some(container_path))
        .unwrap_or_else(|| panic!("nothing is mounted at {container_path}"));
    let host = volume.split(':').next().unwrap();
    let path = root().join("docker").join(host);
    assert!(path.exists(), "{} is mounted but missing", path.display());
    path
}

#[test]
fn the_observability_profile_scrapes_every_service_in_both_files() {
    for file in FILES {
        let services = services_of(file);
        for name in ["prometheus", "grafana"] {
            assert_eq!(
                strings(&services[name]["profiles"]),
                vec!["observability"],
                "{file}: `{name}` runs in the observability profile only"
            );
        }
        let config = load(&mounted(
            &services["prometheus"],
            "/etc/prometheus/prometheus.yml",
        ));
        let jobs: BTreeMap<&str, &Value> = config["scrape_configs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|job| (job["job_name"].as_str().unwrap(), job))
            .collect();
        assert_eq!(
            jobs.keys().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from(ORDERFLOW_SERVICES),
            "{file}: one Prometheus job per service"
        );
        for (name, job) in jobs {
            // The services listen on ORDERFLOW_HTTP_ADDR's port inside their containers.
            let listen = with_defaults(
                services[name]["environment"]["ORDERFLOW_HTTP_ADDR"]
                    .as_str()
                    .unwrap(),
            );
            let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
            let discovery = &job["dns_sd_configs"][0];
            assert_eq!(
                strings(&discovery["names"]),
                vec![name],
                "{file}: job {name}"
            );
            assert_eq!(discovery["port"].as_u64(), Some(port), "{file}: job {name}");
            // Every replica, not one at random: a DNS A lookup of the service name.
            assert_eq!(discovery["type"].as_str(), Some("A"), "{file}: job {name}");
            assert!(
                job.get("metrics_path").is_none(),
                "{file}: job {name} scrapes /metrics, Prometheus's default"
            );
        }
        let provisioning = mounted(&services["grafana"], "/etc/grafana/provisioning");
        assert!(provisioning.join("datasources/prometheus.yml").exists());
        assert!(provisioning.join("dashboards/orderflow.yml").exists());
        mounted(&services["grafana"], "/var/lib/grafana/dashboards");
    }
}

#[test]
fn the_dashboard_queries_only_series_the_services_export() {
    use orderflow_kit::metrics::names;
    let datasources = load(&root().join("docker/grafana/provisioning/datasources/prometheus.yml"));
    let uid = datasources["datasources"][0]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let provider = load(&root().join("docker/grafana/provisioning/dashboards/orderflow.yml"));
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards"),
        "the provider reads where the compose files mount the dashboards"
    );
    let text =
        std::fs::read_to_string(root().join("docker/grafana/dashboards/orderflow.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let exported: BTreeSet<String> = names::ALL
        .iter()
        .map(|name| name.to_string())
        .chain(names::HISTOGRAMS.iter().flat_map(|histogram| {
            ["_bucket", "_sum", "_count"].map(|suffix| format!("{histogram}{suffix}"))
        }))
        .collect();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    let mut queried = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "panel {title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("orderflow_") {
                    assert!(
                        exported.contains(word),
                        "panel {title} queries {word}, which no service exports"
                    );
                    queried.insert(word.to_owned());
                }
            }
        }
    }
    // The series the issue asked for are all on it.
    for series in [
        names::HTTP_REQUESTS,
        names::DELIVERIES,
        names::BACKLOG,
        names::OUTBOX_PENDING,
        names::GATEWAY_RATE_LIMIT_WAITS,
    ] {
        assert!(queried.contains(series), "the dashboard shows no {series}");
    }
}
