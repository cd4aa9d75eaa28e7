//! The operator's files: docker-compose.yml and the Dockerfile. No Docker engine runs in
//! CI, so these read the files against the code.

use std::path::PathBuf;

fn repo_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

#[test]
fn compose_runs_postgres_and_the_gateway_with_settings_the_gateway_knows() {
    let doc: serde_json::Value =
        yaml_serde::from_str(&repo_file("docker-compose.yml")).expect("compose is YAML");
    let services = doc["services"].as_object().expect("services");

    let pg = &services["postgres"];
    // Images can be pinned by digest from `.env`; the default is PostgreSQL 15.
    let image = pg["image"].as_str().expect("image");
    assert!(
        image.starts_with("${PARLEY_POSTGRES_IMAGE:-postgres:15"),
        "{image}"
    );
    let args = &services["gateway"]["build"]["args"];
    for (arg, var) in [
        ("RUST_IMAGE", "PARLEY_RUST_IMAGE"),
        ("RUNTIME_IMAGE", "PARLEY_RUNTIME_IMAGE"),
    ] {
        let value = args[arg].as_str().unwrap_or_default();
        assert!(value.starts_with(&format!("${{{var}:-")), "{arg}: {value}");
        assert!(
            repo_file("Dockerfile").contains(&format!("ARG {arg}=")),
            "the Dockerfile takes {arg}"
        );
    }
    assert!(pg["healthcheck"]["test"].is_array(), "postgres healthcheck");
    assert!(
        pg["volumes"].is_array(),
        "postgres keeps its data in a volume"
    );

    let gw = &services["gateway"];
    assert!(
        gw["build"].is_object() || gw["build"].is_string(),
        "gateway is built here"
    );
    assert!(gw["healthcheck"]["test"].is_array(), "gateway healthcheck");
    assert_eq!(gw["depends_on"]["postgres"]["condition"], "service_healthy");
    let ports: Vec<&str> = gw["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();

    let env = gw["environment"].as_object().expect("environment map");
    for name in env.keys() {
        assert!(
            name == "DATABASE_URL"
                || name == "RUST_LOG"
                || gateway::config::SETTINGS.contains(&name.as_str()),
            "compose sets {name}, which the gateway does not read"
        );
    }
    // The settings that must be there for an external database.
    assert!(env.contains_key("DATABASE_URL") && env.contains_key("PARLEY_JWT_SECRET"));
    let url = env["DATABASE_URL"].as_str().expect("url");
    assert!(
        url.contains("@postgres:5432/"),
        "DATABASE_URL points at the postgres service: {url}"
    );
    // The listen port is the published one.
    let listen = env["PARLEY_LISTEN"].as_str().expect("listen");
    let port = listen.rsplit(':').next().expect("port");
    assert!(
        listen.starts_with("0.0.0.0:"),
        "listens on all interfaces inside the container"
    );
    assert!(
        ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
        "publishes {port}: {ports:?}"
    );
    // Published on the host's loopback only, and no password written in the file.
    assert!(
        ports.iter().all(|p| p.starts_with("127.0.0.1:")),
        "published beyond loopback: {ports:?}"
    );
    let pg_password = pg["environment"]["POSTGRES_PASSWORD"]
        .as_str()
        .expect("password");
    assert!(
        pg_password.starts_with("${"),
        "a password written in the file"
    );
    // Every variable the compose file needs is in `.env.example`.
    let example = repo_file(".env.example");
    for name in [
        "PARLEY_JWT_SECRET",
        "PARLEY_PLATFORM_TOKEN",
        "POSTGRES_PASSWORD",
        "PARLEY_POSTGRES_IMAGE",
        "PARLEY_RUST_IMAGE",
        "PARLEY_RUNTIME_IMAGE",
    ] {
        assert!(
            example.lines().any(|l| l.starts_with(&format!("{name}="))),
            ".env.example lacks {name}"
        );
    }
    // The compose file builds the Dockerfile that exists.
    assert!(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../Dockerfile")
            .exists()
    );
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_a_non_root_user() {
    let file = repo_file("Dockerfile");
    let lines: Vec<&str> = file
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage build");
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("FROM");
    let runtime = &lines[last_from..];
    assert!(
        runtime.iter().any(|l| l.starts_with("COPY --from=")),
        "copies the built binary"
    );
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the runtime stage");
    assert!(user.trim() != "root" && user.trim() != "0");
    assert!(runtime.iter().any(|l| l.starts_with("HEALTHCHECK")));
    assert!(
        runtime
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT") && l.contains("gateway"))
    );
    // The build needs the migrations folder (embedded at compile time).
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("COPY") && (l.contains(" . ") || l.contains("migrations")))
    );
}

#[test]
fn dependencies_build_in_a_layer_of_their_own() {
    // The dependency layer sees only manifests: every crate of the workspace must be in
    // it, or `cargo build` there fails on a missing member.
    let file = repo_file("Dockerfile");
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut members = 0;
    for entry in std::fs::read_dir(&crates).expect("crates") {
        let entry = entry.expect("entry");
        if entry.path().join("Cargo.toml").exists() {
            members += 1;
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                file.contains(&format!("COPY crates/{name}/Cargo.toml ")),
                "the dependency layer lacks crates/{name}/Cargo.toml"
            );
        }
    }
    assert!(members > 5, "{members}");
    // The manifests and the lock file come before the sources, and the build of the
    // dependencies before the copy of everything.
    let manifests = file
        .find("COPY Cargo.toml Cargo.lock")
        .expect("manifests first");
    let deps = file
        .find("cargo build --release --locked -p gateway")
        .expect("deps");
    let all = file.find("COPY . .").expect("sources");
    assert!(manifests < deps && deps < all);
    // The sources are touched after the copy, so the empty crates are never shipped.
    let touched = file[all..].find("touch").expect("touch after COPY . .");
    let built = file[all..]
        .find("cargo build")
        .expect("build after COPY . .");
    assert!(touched < built);
}
