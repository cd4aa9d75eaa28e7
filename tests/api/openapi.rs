//! `openapi.yaml` at the repository root is the contract; it must be what the code
//! generates. Regenerate with `cargo run -- openapi > openapi.yaml`.

use std::path::PathBuf;

#[test]
fn committed_openapi_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi.yaml");
    let generated = gateway::openapi::yaml().expect("generate");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        panic!(
            "openapi.yaml is out of date with the code; regenerate it with\n    cargo run -- openapi > openapi.yaml\nand commit it"
        );
    }
}

#[test]
fn every_operation_documents_its_errors_and_security() {
    let doc: serde_json::Value =
        yaml_serde::from_str(&gateway::openapi::yaml().expect("generate")).expect("yaml");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/api/v1/auth/login"));
    assert!(paths.contains_key("/api/v1/users/{user_id}"));
    assert!(paths.contains_key("/platform/v1/tenants"));
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            let responses = op["responses"].as_object().expect("responses");
            // Path parameters are the path's own; anything else is a query parameter.
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().expect("name");
                let in_path = path.contains(&format!("{{{name}}}"));
                assert_eq!(
                    p["in"] == "path",
                    in_path,
                    "{method} {path}: parameter {name} is documented in {}",
                    p["in"]
                );
            }
            if path.starts_with("/api/") || path.starts_with("/platform/") {
                for status in ["400", "422", "500", "503"] {
                    let content = &responses
                        .get(status)
                        .unwrap_or_else(|| panic!("{method} {path} documents no {status}"))["content"];
                    assert!(
                        content["application/problem+json"].is_object(),
                        "{method} {path} {status}"
                    );
                }
            }
            // Login and refresh are authenticated by what their body carries.
            if path.starts_with("/api/v1/")
                && path != "/api/v1/auth/login"
                && path != "/api/v1/auth/refresh"
            {
                assert!(
                    op.get("security").is_some(),
                    "{method} {path} has no security"
                );
            }
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}
