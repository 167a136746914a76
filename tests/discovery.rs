//! Tailscale discovery and nexus.lock: parsing recorded `tailscale status --json` output
//! (tests/fixtures/tailscale-status.json, Tailscale's real format), a fake `tailscale` executable
//! that prints it, `nexus lock`, `nexus plan --locked`, and `source-url` content served from a
//! local HTTP server on 127.0.0.1. No tailnet is needed.

mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nexus::discovery::tailscale::{parse_status, select};
use nexus::discovery::{Discovered, DiscoveredHost};
use nexus::facts::Facts;
use nexus::plan::Selection;
use nexus::planner::plan_offline;

use harness::project::Project;

const FAILED: i32 = 1;

fn fixture() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tailscale-status.json"),
    )
    .expect("fixture")
}

fn load(dir: &Path, text: &str) -> nexus::config::Loaded {
    std::fs::write(dir.join("nexus.kdl"), text).unwrap();
    nexus::config::load(&dir.join("nexus.kdl")).expect("valid config")
}

/// The plan body of `DIR/plan.lock` (after its one-line header) as JSON.
fn plan_json(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("plan.lock")).unwrap();
    serde_json::from_str(text.split_once('\n').unwrap().1).unwrap()
}

fn names(h: &[DiscoveredHost]) -> Vec<&str> {
    h.iter().map(|h| h.name.as_str()).collect()
}

#[test]
fn parses_fixture_filters_by_tag_and_online_state() {
    let status = parse_status(&fixture()).expect("parse");
    assert_eq!(status.peer.as_ref().unwrap().len(), 4);
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(
        dir.path(),
        r#"
tailscale "web" tag="web" user="deploy"
tailscale "web-all" tag="tag:web" online-only=#false
tailscale "any"
"#,
    );
    let cfg = &loaded.config;
    // Online only by default: web-2 is offline.
    let web = select(&status, cfg.tailscale_group("web").unwrap());
    assert_eq!(
        web,
        vec![DiscoveredHost {
            name: "web-1".into(),
            address: "100.101.102.11".into(),
            user: Some("deploy".into()),
            dns_name: "web-1.tail1234a.ts.net".into(),
            os: "linux".into(),
        }]
    );
    // online-only=#false includes it; its IPv4 address is used though IPv6 is listed first.
    let all = select(&status, cfg.tailscale_group("web-all").unwrap());
    assert_eq!(names(&all), ["web-1", "web-2"]);
    assert_eq!(all[1].address, "100.101.102.12");
    assert_eq!(all[1].user, None);
    // No tags: every online peer (not Self), names from MagicDNS.
    let any = select(&status, cfg.tailscale_group("any").unwrap());
    assert_eq!(names(&any), ["alices-macbook-pro", "db-1", "web-1"]);
}

/// `tailscale status` is another program's output: an address that is not an IP address is never
/// used, whatever else the peer lists.
#[test]
fn peer_addresses_that_are_not_ip_addresses_are_not_used() {
    let mut v: serde_json::Value = serde_json::from_str(&fixture()).unwrap();
    let peers = v["Peer"].as_object_mut().unwrap();
    for (i, peer) in peers.values_mut().enumerate() {
        peer["TailscaleIPs"] = match i {
            0 => serde_json::json!(["$(touch /tmp/x)", "fd7a:115c:a1e0::9"]),
            _ => serde_json::json!(["100.64.0.1;id", "-oProxyCommand=x"]),
        };
        peer["Online"] = serde_json::json!(true);
        peer["Tags"] = serde_json::json!(["tag:web"]);
    }
    let status = parse_status(&serde_json::to_string(&v).unwrap()).expect("parse");
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path(), "tailscale \"all\" tag=\"web\"\n");
    let hosts = select(&status, loaded.config.tailscale_group("all").unwrap());
    let addresses: Vec<&str> = hosts.iter().map(|h| h.address.as_str()).collect();
    assert_eq!(addresses, ["fd7a:115c:a1e0::9"], "{hosts:?}");
}

/// A project with a fake `tailscale` (a shell script printing `status.json`) and a config, where
/// nexus runs without `-c`.
fn project(config: &str) -> Project {
    let p = Project::new().no_config_arg();
    let dir = p.dir();
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = bin.join("tailscale");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"status --json\" ] || {{ echo \"unexpected: $*\" >&2; exit 2; }}\nexec cat '{}'\n",
            dir.join("status.json").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("status.json"), fixture()).unwrap();
    std::fs::write(
        dir.join("nexus.kdl"),
        config.replace("DIR", &dir.display().to_string()),
    )
    .unwrap();
    p
}

const TAILSCALE_CONFIG: &str = r#"
tailscale "web" tag="web" user="deploy" binary="./bin/tailscale"
task "motd" {
    file "DIR/motd" content="hello\n"
}
task "uptime" on="web" {
    command "uptime"
}
"#;

fn add_peer(dir: &Path, name: &str, ip: &str) {
    let p = dir.join("status.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["Peer"][format!("nodekey:{name}")] = serde_json::json!({
        "HostName": name,
        "DNSName": format!("{name}.tail1234a.ts.net."),
        "TailscaleIPs": [ip],
        "Tags": ["tag:web"],
        "Online": true,
        "OS": "linux",
    });
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn lock_pins_discovery_and_locked_plan_refuses_changes() {
    let p = project(TAILSCALE_CONFIG);
    let d = p.dir();
    // --locked without nexus.lock fails.
    let r = p.nexus(&["plan", "--locked", "--target", "local"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("nexus.lock is missing"), "{r:?}");
    assert!(!d.join("nexus.lock").exists());

    let r = p.nexus(&["lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("tailscale web: 1 host(s) (web-1)"),
        "{r:?}"
    );
    let lock = std::fs::read_to_string(d.join("nexus.lock")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&lock).unwrap();
    assert_eq!(
        v["discovery"]["web"],
        serde_json::json!([{
            "name": "web-1",
            "address": "100.101.102.11",
            "user": "deploy",
            "dns_name": "web-1.tail1234a.ts.net",
            "os": "linux"
        }])
    );
    // Deterministic: locking again changes nothing.
    let r = p.nexus(&["lock"]);
    assert!(r.stdout.contains("is up to date"), "{r:?}");
    assert_eq!(std::fs::read_to_string(d.join("nexus.lock")).unwrap(), lock);

    // A locked plan works while discovery agrees with the lock; it records the discovery digest.
    let r = p.nexus(&["plan", "--locked", "--target", "local", "-o", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let plan = plan_json(d);
    let digest = plan["inputs"]["discovery"]["web"].as_str().expect("digest");
    assert_eq!(digest.len(), 64, "{r:?}");

    // A new peer: --locked fails naming it and leaves nexus.lock alone.
    add_peer(d, "web-3", "100.101.102.13");
    let r = p.nexus(&["plan", "--locked", "--target", "local"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("nexus.lock is out of date"), "{r:?}");
    assert!(
        r.stderr
            .contains("tailscale group `web` discovery changed: new host(s) web-3"),
        "{r:?}"
    );
    assert_eq!(std::fs::read_to_string(d.join("nexus.lock")).unwrap(), lock);

    // Without --locked, plan refreshes discovery and rewrites the lock.
    let r = p.nexus(&["plan", "--target", "local"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("Updated nexus.lock"), "{r:?}");
    let lock2 = std::fs::read_to_string(d.join("nexus.lock")).unwrap();
    assert!(lock2.contains("100.101.102.13"), "{lock2}");
    let r = p.nexus(&["plan", "--locked", "--target", "local"]);
    assert_eq!(r.code, 0, "{r:?}");
    // A discovered host is a valid --target (the lock knows it).
    let r = p.nexus(&[
        "plan",
        "--locked",
        "--target",
        "web-3",
        "--format",
        "json",
        "--connect-timeout",
        "1",
    ]);
    assert!(!r.stderr.contains("unknown target"), "{r:?}");
}

#[test]
fn failing_tailscale_is_a_clear_error() {
    let p = project(TAILSCALE_CONFIG);
    std::fs::write(p.path("status.json"), "not json").unwrap();
    let r = p.nexus(&["lock"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(
        r.stderr
            .contains("tailscale group `web`: cannot parse `tailscale status --json` output"),
        "{r:?}"
    );
}

#[test]
fn offline_plan_uses_discovered_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(
        dir.path(),
        r#"
defaults port=2222
tailscale "web" tag="web" user="deploy"
task "uptime" on="web" {
    command "uptime"
}
"#,
    );
    let status = parse_status(&fixture()).unwrap();
    let mut discovered = Discovered::new();
    discovered.insert(
        "web".into(),
        select(&status, loaded.config.tailscale_group("web").unwrap()),
    );
    let mut inputs = nexus::app::inputs::collect(&loaded, &|_| None).unwrap();
    // Without discovery results the task cannot be planned.
    let facts: Facts = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/plans/no-changes/facts/web1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let facts: BTreeMap<String, Facts> = [("web-1".to_string(), facts)].into();
    let observed = |_: &str, _: &str| String::new();
    let errs = plan_offline(
        &loaded,
        "nexus.kdl",
        Selection::default(),
        &inputs,
        &facts,
        &observed,
    )
    .unwrap_err();
    assert!(errs[0].message.contains("was not discovered"), "{errs:?}");

    inputs.set_pinned(discovered.clone(), BTreeMap::new());
    let plan = plan_offline(
        &loaded,
        "nexus.kdl",
        Selection::default(),
        &inputs,
        &facts,
        &observed,
    );
    let plan = match plan {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(plan.tasks[0].hosts, ["web-1"]);
    let c = &plan.hosts[0].connection;
    assert_eq!(c.address.as_deref(), Some("100.101.102.11"));
    assert_eq!(c.user.as_deref(), Some("deploy"));
    assert_eq!(c.port, Some(2222));
    assert_eq!(
        plan.inputs.discovery["web"],
        nexus::discovery::digest(&discovered["web"])
    );
}

/// A tiny HTTP server on 127.0.0.1 serving `body` at every path.
fn serve(body: Arc<Mutex<Vec<u8>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = body.lock().unwrap().clone();
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}/tool.txt")
}

fn url_project(url: &str, blake3: Option<&str>) -> Project {
    let hash = blake3
        .map(|h| format!("        blake3 \"{h}\"\n"))
        .unwrap_or_default();
    project(&format!(
        "task \"tool\" {{\n    file \"DIR/out/tool.txt\" {{\n        source-url \"{url}\"\n{hash}    }}\n}}\n"
    ))
}

#[test]
fn source_url_is_pinned_and_applied() {
    let body = Arc::new(Mutex::new(b"tool v1\n".to_vec()));
    let url = serve(body.clone());
    let p = url_project(&url, None);
    let d = p.dir();
    std::fs::create_dir(d.join("out")).unwrap();
    let r = p.nexus(&["lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v1 = blake3::hash(b"tool v1\n").to_hex().to_string();
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("nexus.lock")).unwrap()).unwrap();
    assert_eq!(lock["urls"][&url], serde_json::json!(v1));

    let r = p.nexus(&["plan", "--locked", "-o", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let plan = plan_json(d);
    assert_eq!(plan["inputs"]["urls"][&url], serde_json::json!(v1));
    let r = p.nexus(&["run", "--locked"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(d.join("out/tool.txt")).unwrap(), b"tool v1\n");

    // The remote file changes: --locked fails naming the URL; so does a plain plan (the pin
    // stands until `nexus lock` accepts the new content).
    *body.lock().unwrap() = b"tool v2\n".to_vec();
    let r = p.nexus(&["plan", "--locked"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(
        r.stderr.contains(&url) && r.stderr.contains("changed"),
        "{r:?}"
    );
    let r = p.nexus(&["plan"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(
        r.stderr.contains(&format!("content of {url} changed")),
        "{r:?}"
    );
    let r = p.nexus(&["lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = p.nexus(&["run", "--locked"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(d.join("out/tool.txt")).unwrap(), b"tool v2\n");
}

#[test]
fn configured_blake3_mismatch_names_the_url() {
    let body = Arc::new(Mutex::new(b"payload\n".to_vec()));
    let url = serve(body);
    let wrong = "0".repeat(64);
    let p = url_project(&url, Some(&wrong));
    let r = p.nexus(&["lock"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(
        r.stderr.contains(&format!("blake3 mismatch for {url}")),
        "{r:?}"
    );
    assert!(!p.path("nexus.lock").exists());
    // The right hash is accepted.
    let right = blake3::hash(b"payload\n").to_hex().to_string();
    let body = Arc::new(Mutex::new(b"payload\n".to_vec()));
    let url = serve(body);
    let p = url_project(&url, Some(&right));
    let r = p.nexus(&["plan"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(p.path("nexus.lock").exists());
}
