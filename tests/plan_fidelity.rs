//! Plan fidelity on a real Debian host (tier 2, issue 13): the packages the Debian examples
//! install, planned against a booted host with the machine's Debian mirror, then applied; every
//! version `dpkg-query` reports afterwards is the version the plan file named, and a plan made
//! after the apply has nothing left to do.

mod harness;

use harness::nspawn::{self, Container};
use harness::project::Project;

/// The packages the examples install on Debian hosts: every `package` line of the examples that
/// is not limited to another OS family.
fn debian_example_packages() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "kdl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("package ") else {
                continue;
            };
            if line.contains("when=") && !line.contains("'debian'") {
                continue;
            }
            // The positional names: quoted words before the first property.
            for word in rest.split_whitespace() {
                match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
                    Some(name) if !word.contains('=') => names.push(name.to_string()),
                    _ => break,
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_debian_examples_install_exactly_the_versions_the_plan_names() {
    nspawn::require_prerequisites();
    let packages = debian_example_packages();
    assert!(
        packages.len() >= 4 && packages.contains(&"nginx".to_string()),
        "the examples' packages were not found: {packages:?}"
    );
    let c = Container::boot("fidelity");
    // As on a real host: the lists are as fresh as the last update, before nexus plans.
    c.exec("apt-get update -q >/dev/null");
    let p = Project::new();
    nspawn::write_known_hosts(&p.path("known_hosts"), &[&c]);
    p.write("ssh_config", "");
    let lines: String = packages
        .iter()
        .map(|n| format!("    package \"{n}\"\n"))
        .collect();
    p.config(&format!(
        "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\"\n\
         host \"fidelity\" \"root@{}:{}\" identity=\"{}\"\n\
         task \"packages\" on=\"fidelity\" {{\n{lines}}}\n",
        c.ip,
        c.port,
        c.user_key.private.display()
    ));
    let r = p.nexus(&["plan", "-o", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = p.nexus(&["apply", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");

    // The versions the plan named, by package (the plan file's fields: NAME -> VERSION).
    let text = std::fs::read_to_string(p.path("plan.lock")).unwrap();
    let body = text.split_once('\n').map_or(text.as_str(), |(_, b)| b);
    let plan: serde_json::Value = serde_json::from_str(body).unwrap();
    let mut planned = Vec::new();
    for r in plan["hosts"][0]["resources"].as_array().unwrap() {
        for f in r["fields"].as_array().into_iter().flatten() {
            planned.push((
                f["field"].as_str().unwrap().to_string(),
                f["to"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(
        planned.len(),
        packages.len(),
        "one planned version per package: {planned:?}"
    );
    for (name, version) in &planned {
        let installed = c.exec(&format!("dpkg-query -W -f '${{Version}}' {name}"));
        assert_eq!(
            &installed, version,
            "{name}: installed {installed}, the plan named {version}"
        );
    }
    eprintln!("planned and installed: {planned:?}");
    let again = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again:?}");
}
