//! A real plan without hosts: a configuration planned offline against fixed facts, every
//! resource observed as absent. Shared by tests/plan_file.rs and the plan reader's fuzz bench.

use std::collections::BTreeMap;

use nexus::facts::Facts;
use nexus::plan::{Plan, Selection};
use nexus::planner::plan_offline;

/// Two hosts, a directory and a file whose content travels as a blob (with a diff).
pub const CONFIG: &str = r#"
host "web1" "192.0.2.10"
host "web2" "192.0.2.11"

group "web" "web1" "web2"

task "setup" on="web" {
    directory "/srv/app" owner="deploy" mode="0755"
    file "/srv/app/motd" content="hello from nexus\n" mode="0644"
}
"#;

/// Facts of a Debian 12 host named `host`.
pub fn facts(host: &str) -> Facts {
    serde_json::from_value(serde_json::json!({
        "os": "linux", "os_family": "debian",
        "distribution": {"id": "debian", "version": "12", "codename": "bookworm", "like": [], "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
        "kernel": "6.1.0-18-amd64", "architecture": "x86_64", "hostname": host, "fqdn": format!("{host}.example.com"),
        "cpu_count": 2, "memory_total_bytes": 2_084_204_544u64, "package_manager": "apt", "init_system": "systemd",
        "user": "root", "uid": 0, "gid": 0, "home": "/root", "shell": "/bin/bash",
        "default_ipv4": "192.0.2.10", "machine_id": null
    }))
    .expect("facts")
}

/// The plan of `config` (as `nexus.kdl`) over `hosts`, where nothing exists yet.
pub fn plan(config: &str, hosts: &[&str]) -> Plan {
    let dir = std::env::temp_dir();
    let loaded = nexus::config::load_str(config, "nexus.kdl", &dir).expect("config is valid");
    let inputs = nexus::app::inputs::collect(&loaded, &|_| None).expect("inputs");
    let facts: BTreeMap<String, Facts> = hosts.iter().map(|h| (h.to_string(), facts(h))).collect();
    plan_offline(
        &loaded,
        "nexus.kdl",
        Selection::default(),
        &inputs,
        &facts,
        &|_, _| "exists=false".into(),
    )
    .expect("plan")
}
