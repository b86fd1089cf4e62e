//! The shipped configuration files: every file in config/ parses and validates, and
//! config/node.toml is exactly the built-in defaults and mentions every key.

use std::path::{Path, PathBuf};

use peerlink::config::Config;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

#[test]
fn every_config_file_parses_and_validates() {
    let mut seen = 0;
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        if let Err(e) = Config::load(&path) {
            panic!("{e}");
        }
        seen += 1;
    }
    assert!(seen >= 2, "expected node.toml and at least one example");
}

#[test]
fn node_toml_equals_the_built_in_defaults() {
    let config = Config::load(&config_dir().join("node.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config, Config::default());
}

/// Every key the built-in configuration has is set (or, for optional keys, shown commented out)
/// in its section of config/node.toml, so a key added to the code without documentation fails.
#[test]
fn node_toml_documents_every_key() {
    let text = std::fs::read_to_string(config_dir().join("node.toml")).expect("readable");
    let defaults = toml::Value::try_from(Config::default()).expect("serializable");
    let mut expected: Vec<(String, String)> = Vec::new();
    for (section, table) in defaults.as_table().expect("a table") {
        for key in table.as_table().expect("sections are tables").keys() {
            expected.push((section.clone(), key.clone()));
        }
    }
    // Optional keys whose default is "unset" are not serialized; list them here.
    expected.push(("admin".into(), "token".into()));

    for (section, key) in expected {
        let mut current = String::new();
        let mut found = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                current = line.trim_matches(|c| c == '[' || c == ']').to_string();
            } else if current == section {
                let line = line.trim_start_matches('#').trim();
                if line
                    .split_once('=')
                    .is_some_and(|(k, _)| k.trim() == key.as_str())
                {
                    found = true;
                }
            }
        }
        assert!(
            found,
            "config/node.toml does not document [{section}] {key}"
        );
    }
}
