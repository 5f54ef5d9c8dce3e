//! The deploy artifacts agree with the binary and with each other: the
//! Dockerfile's entrypoint, ports and config path with the CLI and the
//! default policy; the Kubernetes manifests' ports, probe paths and config
//! mount with their policy; the compose example likewise; every policy under
//! deploy/ passes `palisade check`; the dashboard and alerts use only SPEC §4
//! metric names. (Schema checks, hadolint and promtool run in
//! .ci/deploy-checks.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Variables the example policies read secrets from; unset for `check`.
const SECRET_VARS: [&str; 3] = ["SUPABASE_JWT_SECRET", "VAPI_WEBHOOK_SECRET", "REDIS_URL"];

// === helpers ===

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn toml_file(rel: &str) -> toml::Table {
    read(rel).parse().unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The one document of `kind` named `name` in a manifest file.
fn manifest(rel: &str, kind: &str, name: &str) -> Yaml {
    yaml_docs(rel)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{rel}: no {kind} named {name}"))
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], Vec::as_slice)
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {y:?}"))
}

fn by_name<'a>(items: &'a Yaml, name: &str) -> &'a Yaml {
    list(items)
        .iter()
        .find(|i| i["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("nothing named {name} in {items:?}"))
}

/// `table.a.b` as a string.
fn key<'a>(table: &'a toml::Table, dotted: &str) -> &'a str {
    let mut parts = dotted.split('.');
    let first = parts.next().unwrap();
    let mut value = table.get(first).unwrap_or_else(|| panic!("no {dotted}"));
    for part in parts {
        value = value.get(part).unwrap_or_else(|| panic!("no {dotted}"));
    }
    value
        .as_str()
        .unwrap_or_else(|| panic!("{dotted} is not a string"))
}

fn port_of(listen: &str) -> u16 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {listen}"))
}

fn host_of(listen: &str) -> &str {
    let rest = listen.split_once("://").map_or(listen, |(_, r)| r);
    rest.rsplit_once(':').unwrap().0
}

/// Every `${VAR}` or `${VAR:-default}` a policy reads.
fn vars_in(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|s| s.split_once('}'))
        .map(|(var, _)| var.split(":-").next().unwrap().to_string())
        .collect()
}

/// Runs `palisade check` on `file` with the example secrets unset, as CI does.
fn palisade_check(file: &Path) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.arg("check").arg("--config").arg(file);
    for var in SECRET_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "palisade check --config {} failed:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The policy files under deploy/.
fn deploy_policies() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "policy.toml") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&path("deploy"), &mut out);
    out.sort();
    out
}

// === Dockerfile ===

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (op.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect()
}

fn instructions(op: &str) -> Vec<String> {
    dockerfile()
        .into_iter()
        .filter(|(o, _)| o == op)
        .map(|(_, rest)| rest)
        .collect()
}

/// The value of `ENV NAME=value` (last one wins, as in Docker).
fn docker_env(name: &str) -> String {
    instructions("ENV")
        .iter()
        .filter_map(|e| e.strip_prefix(&format!("{name}=")))
        .next_back()
        .unwrap_or_else(|| panic!("no ENV {name}"))
        .trim_matches('"')
        .to_string()
}

/// The `sed 's|FROM|TO|'` that derives the image's policy from policy.toml.
fn image_policy_substitution() -> (String, String) {
    let run = instructions("RUN")
        .into_iter()
        .find(|r| r.contains("sed ") && r.contains("policy.toml"))
        .expect("a RUN sed that writes the image's policy");
    let expr = run
        .split("sed '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let parts: Vec<&str> = expr.split('|').collect();
    assert_eq!(parts.len(), 4, "expected s|FROM|TO|, got {expr}");
    let from = parts[1].trim_start_matches('^').to_string();
    (from, parts[2].to_string())
}

/// The image's default policy: policy.toml with the Dockerfile's substitution.
fn image_policy_text() -> String {
    let (from, to) = image_policy_substitution();
    let shipped = read("policy.toml");
    let hits = shipped.lines().filter(|l| l.starts_with(&from)).count();
    assert_eq!(
        hits, 1,
        "the Dockerfile rewrites `{from}` in policy.toml, which must occur once at a line start"
    );
    shipped
        .lines()
        .map(|l| match l.strip_prefix(&from) {
            Some(rest) => format!("{to}{rest}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn dockerfile_builds_with_the_pinned_toolchain_into_distroless_nonroot() {
    let toolchain = toml_file("rust-toolchain.toml");
    let channel = key(&toolchain, "toolchain.channel");
    let args = instructions("ARG");
    assert!(
        args.contains(&format!("RUST_VERSION={channel}")),
        "ARG RUST_VERSION must be rust-toolchain.toml's {channel}: {args:?}"
    );
    let froms = instructions("FROM");
    assert_eq!(froms.len(), 2, "multi-stage: a builder and a final image");
    assert!(froms[0].starts_with("rust:${RUST_VERSION}"), "{}", froms[0]);
    assert!(
        froms[1].starts_with("gcr.io/distroless/cc") && froms[1].contains(":nonroot"),
        "{}",
        froms[1]
    );
    // The builder's glibc must be the one the final image carries.
    assert!(
        froms[0].contains("-bookworm") && froms[1].contains("-debian12"),
        "builder and final image from the same Debian release: {froms:?}"
    );
    let user = instructions("USER");
    let last = user.last().expect("USER");
    assert!(!["root", "0", "0:0"].contains(&last.as_str()), "{last}");
    assert!(
        instructions("HEALTHCHECK").is_empty(),
        "probes, not HEALTHCHECK"
    );

    let cargo = toml_file("Cargo.toml");
    let version = key(&cargo, "package.version");
    assert!(args.contains(&format!("VERSION={version}")), "{args:?}");
    let labels = instructions("LABEL").join(" ");
    for label in ["title", "description", "version", "licenses"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{label}=")),
            "OCI label {label}"
        );
    }
    assert!(labels.contains(&format!("licenses=\"{}\"", key(&cargo, "package.license"))));
}

#[test]
fn dockerfile_entrypoint_and_cmd_run_the_sidecar_with_its_default_policy() {
    assert_eq!(instructions("ENTRYPOINT"), [r#"["palisade"]"#]);
    assert_eq!(instructions("CMD"), [r#"["run"]"#]);
    // The binary lands on distroless' PATH under the entrypoint's name.
    let copies = instructions("COPY");
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with("--from=") && c.ends_with(" /usr/local/bin/palisade")),
        "{copies:?}"
    );
    // `palisade run` is a subcommand of this binary, reading $PALISADE_CONFIG.
    let help = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("$PALISADE_CONFIG"));

    // PALISADE_CONFIG names the file the image's policy is copied to.
    let config = docker_env("PALISADE_CONFIG");
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with("--from=") && c.ends_with(&format!(" {config}"))),
        "no COPY to {config}: {copies:?}"
    );

    // That policy is valid, and EXPOSE lists exactly its two ports.
    let text = image_policy_text();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-policy.toml");
    std::fs::write(&file, &text).unwrap();
    palisade_check(&file);
    let policy: toml::Table = text.parse().unwrap();
    let server = key(&policy, "server.listen");
    let admin = key(&policy, "admin.listen");
    assert_eq!(
        host_of(admin),
        "0.0.0.0",
        "in a container the admin listener must be reachable for probes and scrapes"
    );
    let exposed: BTreeSet<u16> = instructions("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    assert_eq!(exposed, BTreeSet::from([port_of(server), port_of(admin)]));
}

#[test]
fn dockerignore_lets_in_what_the_build_copies() {
    let ignore = read(".dockerignore");
    let allowed: BTreeSet<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();
    assert!(ignore.lines().any(|l| l.trim() == "*"), "deny by default");
    for copy in instructions("COPY") {
        if copy.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(
                allowed.contains(source),
                "COPY {source}, excluded by .dockerignore"
            );
        }
    }
}

#[test]
fn the_image_is_built_with_the_committed_profile_which_this_toolchain_reads() {
    // The build stage copies pgo/ under its WORKDIR and names the file in
    // RUSTFLAGS, as bench/pgo.sh builds it.
    let workdir = instructions("WORKDIR").remove(0);
    assert!(
        instructions("COPY").iter().any(|c| c == "pgo ./pgo"),
        "{:?}",
        instructions("COPY")
    );
    assert_eq!(
        docker_env("RUSTFLAGS"),
        format!("-Cprofile-use={workdir}/pgo/palisade.profdata")
    );
    assert!(read("bench/pgo.sh").contains("PROFILE=$ROOT/pgo/palisade.profdata"));
    // rustc only warns about a profile it cannot read (a raw profile, one
    // from another LLVM, a Git LFS pointer) and then builds without it: the
    // file must be one this toolchain takes without a word.
    let probe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pgo_probe.rs");
    std::fs::write(
        &probe,
        "pub fn triple(x: u32) -> u32 { x.wrapping_mul(3) }\n",
    )
    .unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "lib", "-O"])
        .arg(format!(
            "-Cprofile-use={}",
            path("pgo/palisade.profdata").display()
        ))
        .arg("-o")
        .arg(probe.with_extension("rlib"))
        .arg(&probe)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
}

// === Kubernetes ===

const K8S: &str = "deploy/kubernetes";

fn k8s(file: &str) -> String {
    format!("{K8S}/{file}")
}

fn k8s_policy() -> toml::Table {
    toml_file(&k8s("policy.toml"))
}

fn deployment() -> Yaml {
    manifest(&k8s("deployment.yaml"), "Deployment", "api")
}

/// palisade's container: a native sidecar (init container, restartPolicy Always).
fn sidecar(deploy: &Yaml) -> Yaml {
    let spec = &deploy["spec"]["template"]["spec"];
    let sidecar = by_name(&spec["initContainers"], "palisade").clone();
    assert_eq!(
        sidecar["restartPolicy"].as_str(),
        Some("Always"),
        "a native sidecar"
    );
    assert!(
        list(&spec["containers"])
            .iter()
            .all(|c| c["name"].as_str() != Some("palisade")),
        "palisade belongs in initContainers only"
    );
    sidecar
}

fn container_port(container: &Yaml, name: &str) -> u16 {
    let port = by_name(&container["ports"], name)["containerPort"]
        .as_i64()
        .unwrap();
    u16::try_from(port).unwrap()
}

fn env_value(container: &Yaml, name: &str) -> Yaml {
    by_name(&container["env"], name).clone()
}

#[test]
fn kubernetes_sidecar_ports_probes_and_mount_match_its_policy() {
    let policy = k8s_policy();
    let deploy = deployment();
    let palisade = sidecar(&deploy);

    let http = container_port(&palisade, "http");
    let admin = container_port(&palisade, "admin");
    assert_eq!(http, port_of(key(&policy, "server.listen")));
    assert_eq!(admin, port_of(key(&policy, "admin.listen")));
    assert_eq!(
        host_of(key(&policy, "admin.listen")),
        "0.0.0.0",
        "probes need it"
    );

    for (probe, want) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &palisade[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(want), "{probe}");
        assert_eq!(
            get["port"].as_str(),
            Some("admin"),
            "{probe} on the admin port"
        );
    }

    // The policy directory: a ConfigMap mounted whole (no subPath, so hot
    // reload sees updates), where PALISADE_CONFIG and the image expect it.
    let mount = by_name(&palisade["volumeMounts"], "policy");
    assert!(
        mount["subPath"].is_badvalue(),
        "a subPath mount never updates"
    );
    let dir = str_of(&mount["mountPath"], "mountPath");
    let config = env_value(&palisade, "PALISADE_CONFIG");
    assert_eq!(
        config["value"].as_str(),
        Some(format!("{dir}/policy.toml").as_str())
    );
    assert_eq!(docker_env("PALISADE_CONFIG"), format!("{dir}/policy.toml"));
    let volume = by_name(&deploy["spec"]["template"]["spec"]["volumes"], "policy");
    assert_eq!(
        volume["configMap"]["name"].as_str(),
        Some("palisade-policy")
    );

    // Requests and limits on the sidecar.
    for kind in ["requests", "limits"] {
        let r = &palisade["resources"][kind];
        assert!(
            !r["memory"].is_badvalue() && !r["cpu"].is_badvalue(),
            "{kind}"
        );
    }

    // The pod's grace covers palisade's drain.
    let grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    let shutdown = humantime::parse_duration(key(&policy, "server.shutdown_grace")).unwrap();
    assert!(
        Duration::from_secs(u64::try_from(grace).unwrap()) > shutdown,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_grace {shutdown:?}"
    );

    // Scrape annotations point at the admin listener.
    let annotations = &deploy["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(admin.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
}

#[test]
fn kubernetes_app_listens_where_the_policy_forwards_on_loopback_only() {
    let policy = k8s_policy();
    let upstream = key(&policy, "upstream.url");
    assert_eq!(
        host_of(upstream),
        "127.0.0.1",
        "the app shares the pod's loopback"
    );
    let deploy = deployment();
    let app = by_name(&deploy["spec"]["template"]["spec"]["containers"], "api");
    let args: Vec<&str> = list(&app["args"]).iter().filter_map(Yaml::as_str).collect();
    let after = |flag: &str| args.iter().skip_while(|a| **a != flag).nth(1).copied();
    assert_eq!(after("--host"), Some("127.0.0.1"));
    assert_eq!(
        after("--port"),
        Some(port_of(upstream).to_string().as_str())
    );
    assert!(app["ports"].is_badvalue(), "the app publishes no port");
    // Its readiness goes through palisade's unauthenticated health route.
    let probe = &app["readinessProbe"]["httpGet"];
    let http = port_of(key(&policy, "server.listen"));
    assert_eq!(probe["port"].as_i64(), Some(i64::from(http)));
    let health = policy["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r.get("path").and_then(|p| p.as_str()) == probe["path"].as_str())
        .expect("the app's readiness path is a route of its own");
    assert_eq!(health.get("auth").and_then(|a| a.as_str()), Some("none"));
}

#[test]
fn kubernetes_service_targets_palisade_never_the_app() {
    let policy = k8s_policy();
    let palisade = sidecar(&deployment());
    let service = manifest(&k8s("service.yaml"), "Service", "api");
    let ports = list(&service["spec"]["ports"]);
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["targetPort"].as_str(), Some("http"));
    assert_eq!(
        container_port(&palisade, "http"),
        port_of(key(&policy, "server.listen"))
    );
    let upstream_port = i64::from(port_of(key(&policy, "upstream.url")));
    for doc in yaml_docs(&k8s("service.yaml")) {
        for port in list(&doc["spec"]["ports"]) {
            assert_ne!(port["targetPort"].as_i64(), Some(upstream_port));
        }
    }

    // The ServiceMonitor scrapes the admin Service's "admin" port.
    let admin = manifest(&k8s("service.yaml"), "Service", "api-palisade-admin");
    assert_eq!(
        admin["spec"]["ports"][0]["targetPort"].as_str(),
        Some("admin")
    );
    let monitor = manifest(
        &k8s("servicemonitor.yaml"),
        "ServiceMonitor",
        "api-palisade",
    );
    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_hash()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(
            &admin["metadata"]["labels"][str_of(k, "label")],
            v,
            "selector {k:?}"
        );
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], admin["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
}

#[test]
fn kubernetes_network_policy_admits_palisade_ports_only() {
    let policy = k8s_policy();
    let deploy = deployment();
    let np = manifest(
        &k8s("networkpolicy.yaml"),
        "NetworkPolicy",
        "api-only-through-palisade",
    );
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    let ports: BTreeSet<i64> = list(&np["spec"]["ingress"])
        .iter()
        .flat_map(|rule| {
            list(&rule["ports"])
                .iter()
                .filter_map(|p| p["port"].as_i64())
        })
        .collect();
    let want: BTreeSet<i64> = ["server.listen", "admin.listen"]
        .iter()
        .map(|k| i64::from(port_of(key(&policy, k))))
        .collect();
    assert_eq!(ports, want, "palisade's two ports, never the app's");
}

#[test]
fn kubernetes_secret_holds_every_variable_the_policy_reads() {
    let policy_text = read(&k8s("policy.toml"));
    let palisade = sidecar(&deployment());
    let secret = manifest(&k8s("secret.yaml"), "Secret", "palisade-secrets");
    for var in vars_in(&policy_text) {
        let env = env_value(&palisade, &var);
        let secret_ref = &env["valueFrom"]["secretKeyRef"];
        assert_eq!(
            secret_ref["name"].as_str(),
            Some("palisade-secrets"),
            "{var}"
        );
        let k = str_of(&secret_ref["key"], "key");
        assert!(
            !secret["stringData"][k].is_badvalue(),
            "{var}: no key {k} in the Secret"
        );
    }
    // The Redis URL names redis.yaml's Service and port.
    let url = str_of(&secret["stringData"]["redis-url"], "redis-url");
    let redis = manifest(&k8s("redis.yaml"), "Service", "palisade-redis");
    assert_eq!(host_of(url), "palisade-redis");
    assert_eq!(
        i64::from(port_of(url)),
        redis["spec"]["ports"][0]["port"].as_i64().unwrap()
    );
    let sts = manifest(&k8s("redis.yaml"), "StatefulSet", "palisade-redis");
    assert_eq!(sts["spec"]["replicas"].as_i64(), Some(1));
}

#[test]
fn kustomization_ties_every_manifest_and_generates_the_policy_config_map() {
    let kust = yaml_docs(&k8s("kustomization.yaml")).remove(0);
    let listed: BTreeSet<String> = list(&kust["resources"])
        .iter()
        .map(|r| str_of(r, "resource").to_string())
        .collect();
    // servicemonitor.yaml is listed commented out: it needs the operator's CRD.
    let commented: BTreeSet<String> = read(&k8s("kustomization.yaml"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# - "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(path(K8S))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        &listed | &commented,
        files,
        "every manifest is in the kustomization"
    );
    assert!(commented.contains("servicemonitor.yaml"));

    let generator = by_name(&kust["configMapGenerator"], "palisade-policy");
    assert_eq!(
        list(&generator["files"]),
        [Yaml::String("policy.toml".into())]
    );
    assert_eq!(
        generator["options"]["disableNameSuffixHash"].as_bool(),
        Some(true),
        "a stable name, so an edit hot-reloads instead of rolling the pods"
    );
}

// === Compose ===

#[test]
fn compose_mounts_the_policy_and_publishes_its_ports() {
    let compose = yaml_docs("deploy/compose/compose.yaml").remove(0);
    let services = &compose["services"];
    let palisade = &services["palisade"];
    let policy_text = read("deploy/compose/palisade/policy.toml");
    let policy: toml::Table = policy_text.parse().unwrap();

    // The policy directory is mounted where PALISADE_CONFIG points.
    let config = str_of(
        &palisade["environment"]["PALISADE_CONFIG"],
        "PALISADE_CONFIG",
    );
    let (dir, file) = config.rsplit_once('/').unwrap();
    let mount = list(&palisade["volumes"])
        .iter()
        .filter_map(Yaml::as_str)
        .find(|v| v.split(':').nth(1) == Some(dir))
        .expect("a volume at the policy directory");
    let source = mount.split(':').next().unwrap();
    assert!(path("deploy/compose").join(source).join(file).is_file());
    for var in vars_in(&policy_text) {
        assert!(
            !palisade["environment"][var.as_str()].is_badvalue(),
            "{var} unset"
        );
    }

    // Published ports are the policy's.
    let published: BTreeSet<u16> = list(&palisade["ports"])
        .iter()
        .map(|p| {
            str_of(p, "port")
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let server = port_of(key(&policy, "server.listen"));
    let admin = port_of(key(&policy, "admin.listen"));
    assert_eq!(published, BTreeSet::from([server, admin]));
    assert_eq!(host_of(key(&policy, "admin.listen")), "0.0.0.0");

    // The upstream is a service listening where the policy forwards.
    let upstream = key(&policy, "upstream.url");
    let app = &services[host_of(upstream)];
    let command: Vec<&str> = list(&app["command"])
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(command, ["--port", port_of(upstream).to_string().as_str()]);
    assert!(app["ports"].is_badvalue(), "the upstream publishes no port");

    // Prometheus scrapes the admin port and loads the shipped rules.
    let prom = yaml_docs("deploy/compose/prometheus/prometheus.yml").remove(0);
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some(format!("palisade:{admin}").as_str())
    );
    let rules_in_container = str_of(&prom["rule_files"][0], "rule_files");
    let rules_mount = list(&services["prometheus"]["volumes"])
        .iter()
        .filter_map(Yaml::as_str)
        .find(|v| v.split(':').nth(1) == Some(rules_in_container))
        .expect("rules.yml mounted where prometheus.yml loads it");
    let source = rules_mount.split(':').next().unwrap();
    assert!(path("deploy/compose").join(source).is_file());
}

#[test]
fn compose_traces_go_to_its_collector() {
    let compose = yaml_docs("deploy/compose/compose.yaml").remove(0);
    let services = &compose["services"];
    let policy: toml::Table = read("deploy/compose/palisade/policy.toml").parse().unwrap();
    let endpoint = key(&policy, "tracing.otlp_endpoint");
    assert_eq!(policy["tracing"]["propagate"].as_bool(), Some(true));
    // The endpoint names the collector service and a port it exposes.
    let collector = &services[host_of(endpoint)];
    assert!(!collector.is_badvalue(), "no service {endpoint}");
    let port = port_of(endpoint).to_string();
    assert!(
        list(&collector["expose"])
            .iter()
            .any(|p| p.as_str() == Some(port.as_str())),
        "the collector exposes {port}"
    );
    // Its config is mounted, takes OTLP/HTTP on that port and has a
    // traces pipeline fed by that receiver.
    let mount = list(&collector["volumes"])
        .iter()
        .filter_map(Yaml::as_str)
        .next()
        .expect("the collector's config mounted");
    let source = mount.split(':').next().unwrap();
    let config = yaml_docs(&format!(
        "deploy/compose/{}",
        source.trim_start_matches("./")
    ))
    .remove(0);
    let http = str_of(
        &config["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "otlp http endpoint",
    );
    assert_eq!(port_of(http).to_string(), port);
    let receivers: Vec<&str> = list(&config["service"]["pipelines"]["traces"]["receivers"])
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(receivers.contains(&"otlp"), "{receivers:?}");

    // Compose's grace covers the drain and the span flush after it.
    let stop = str_of(
        &services["palisade"]["stop_grace_period"],
        "stop_grace_period",
    );
    let stop = humantime::parse_duration(stop).unwrap();
    let drain = humantime::parse_duration(key(&policy, "server.shutdown_grace")).unwrap();
    let flush = humantime::parse_duration(key(&policy, "tracing.export_timeout")).unwrap();
    assert!(
        drain + flush + Duration::from_secs(1) < stop,
        "stop_grace_period {stop:?} must exceed shutdown_grace {drain:?} + export_timeout {flush:?} + 1s"
    );
}

// === policies ===

#[test]
fn every_policy_under_deploy_passes_palisade_check() {
    let policies = deploy_policies();
    assert!(policies.len() >= 2, "{policies:?}");
    for policy in policies {
        palisade_check(&policy);
    }
}

// === metrics ===

const SPEC_METRICS: [&str; 15] = palisade::observe::metrics::names::ALL;

/// Metric names in `text`, histogram series mapped to their metric.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("palisade_") {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| SPEC_METRICS.contains(b))
            .map_or(name.clone(), str::to_string);
        out.insert(base);
    }
    out
}

#[test]
fn dashboard_and_alerts_use_spec_metric_names_only() {
    let spec: BTreeSet<String> = SPEC_METRICS.iter().map(|s| s.to_string()).collect();
    let dashboard = read("deploy/grafana/palisade.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = String::new();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let used = metric_names(&exprs);
    assert!(used.is_subset(&spec), "unknown: {:?}", &used - &spec);
    assert_eq!(used, spec, "the dashboard shows every SPEC metric");

    let rules = yaml_docs("deploy/prometheus/rules.yml").remove(0);
    let mut alerts = BTreeSet::new();
    let mut rule_exprs = String::new();
    for rule in list(&rules["groups"][0]["rules"]) {
        alerts.insert(str_of(&rule["alert"], "alert").to_string());
        rule_exprs.push_str(str_of(&rule["expr"], "expr"));
    }
    let used = metric_names(&rule_exprs);
    assert!(used.is_subset(&spec), "unknown: {:?}", &used - &spec);
    // Each alert has a unit test.
    let tests = read("deploy/prometheus/rules_test.yml");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no test for {alert}"
        );
    }
}

// === README ===

/// Every key path in a TOML document: `table.key`, with `[[routes]]`
/// entries as `routes[].key`.
fn key_paths(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let here = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => key_paths(&here, t, out),
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && k == "routes" =>
            {
                for item in items {
                    key_paths(&format!("{here}[]"), item.as_table().unwrap(), out);
                }
            }
            _ => {
                out.insert(here);
            }
        }
    }
}

#[test]
fn readme_migration_guide_shows_only_keys_of_the_shipped_policy() {
    let readme = read("README.md");
    let guide = readme
        .split("\n## Migrating a backend's middleware to palisade\n")
        .nth(1)
        .expect("the migration guide")
        .split("\n## ")
        .next()
        .unwrap();
    let mut known = BTreeSet::new();
    key_paths("", &toml_file("policy.toml"), &mut known);
    let blocks: Vec<&str> = guide
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 9, "one block per concern");
    for block in blocks {
        let table: toml::Table = block.parse().unwrap_or_else(|e| panic!("{e}\n{block}"));
        let mut shown = BTreeSet::new();
        key_paths("", &table, &mut shown);
        assert!(
            shown.is_subset(&known),
            "not in policy.toml: {:?}",
            &shown - &known
        );
    }
}
