//! SPEC §5 operations: hot reload (SIGHUP, file change, Kubernetes ConfigMap
//! symlink swap, invalid edits) and the HTTPS listener (ALPN h2/http1.1, HSTS).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::process::{Process, temp_dir};
use support::*;

fn policy_text(upstream: std::net::SocketAddr, routes: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{upstream}\"\n[defaults]\nauth = \"none\"\n{routes}"
    )
}

const ONE_ROUTE: &str = "[[routes]]\nname = \"old\"\npath = \"/old/**\"\n";
const TWO_ROUTES: &str = "[[routes]]\nname = \"old\"\npath = \"/old/**\"\n[[routes]]\nname = \"new\"\npath = \"/new/**\"\n";

/// Replaces a file the way editors do: write a sibling, rename over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn until_status(addr: std::net::SocketAddr, path: &str, status: StatusCode) {
    for _ in 0..300 {
        if get(addr, path).await.status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never answered {status}");
}

async fn reloads(admin: std::net::SocketAddr, result: &str) -> f64 {
    let scrape = String::from_utf8(get(admin, "/metrics").await.body.to_vec()).unwrap();
    sample(
        &scrape,
        &format!("palisade_config_reloads_total{{result=\"{result}\"}}"),
    )
}

#[tokio::test]
async fn file_change_reloads_and_an_invalid_edit_keeps_the_old_policy() {
    let upstream = TestUpstream::start().await;
    let dir = temp_dir("reload-file");
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy_text(upstream.addr, ONE_ROUTE)).unwrap();
    let mut process = Process::start(&path);
    let (proxy, admin) = process.addresses();
    assert_eq!(get(proxy, "/new/x").await.status, StatusCode::NOT_FOUND);
    replace_file(&path, &policy_text(upstream.addr, TWO_ROUTES));
    until_status(proxy, "/new/x", StatusCode::OK).await;
    assert!(reloads(admin, "success").await >= 1.0);
    // A broken edit: logged, counted, and the running policy stays.
    replace_file(
        &path,
        &policy_text(upstream.addr, "[[routes]]\nname = \"x\"\npathh = \"/**\"\n"),
    );
    process.wait_for("config reload failed");
    assert!(reloads(admin, "failure").await >= 1.0);
    assert_eq!(get(proxy, "/new/x").await.status, StatusCode::OK);
    assert_eq!(get(admin, "/readyz").await.status, StatusCode::OK);
    process.signal("TERM");
    assert_eq!(process.rest().0, Some(0));
}

#[tokio::test]
async fn sighup_reloads_even_an_unchanged_file_counted_from_zero() {
    let upstream = TestUpstream::start().await;
    let dir = temp_dir("reload-hup");
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy_text(upstream.addr, ONE_ROUTE)).unwrap();
    let mut process = Process::start(&path);
    let (_proxy, admin) = process.addresses();
    // Series whose labels are known at start-up are scraped at 0 before
    // their first event (before session 16 they were absent until then).
    let scrape = String::from_utf8(get(admin, "/metrics").await.body.to_vec()).unwrap();
    for series in [
        "palisade_config_reloads_total{result=\"success\"}",
        "palisade_config_reloads_total{result=\"failure\"}",
        "palisade_ratelimit_backend_errors_total{backend=\"redis\"}",
    ] {
        assert_eq!(sample_present(&scrape, series), 0.0, "{series}");
    }
    let before = reloads(admin, "success").await;
    process.signal("HUP");
    process.wait_for("config reloaded");
    assert_eq!(reloads(admin, "success").await, before + 1.0);
    let scrape = String::from_utf8(get(admin, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        sample(
            &scrape,
            "palisade_config_last_reload_success_timestamp_seconds"
        ) > 1.0e9
    );
    process.signal("TERM");
    assert_eq!(process.rest().0, Some(0));
}

#[cfg(unix)]
#[tokio::test]
async fn configmap_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let upstream = TestUpstream::start().await;
    // The layout Kubernetes mounts: policy.toml -> ..data/policy.toml, ..data -> ..v1
    let dir = temp_dir("reload-configmap");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("..v1")).unwrap();
    std::fs::write(
        dir.join("..v1/policy.toml"),
        policy_text(upstream.addr, ONE_ROUTE),
    )
    .unwrap();
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/policy.toml", dir.join("policy.toml")).unwrap();
    let mut process = Process::start(&dir.join("policy.toml"));
    let (proxy, _admin) = process.addresses();
    assert_eq!(get(proxy, "/new/x").await.status, StatusCode::NOT_FOUND);
    // The update: a new version directory, then an atomic swap of ..data.
    std::fs::create_dir_all(dir.join("..v2")).unwrap();
    std::fs::write(
        dir.join("..v2/policy.toml"),
        policy_text(upstream.addr, TWO_ROUTES),
    )
    .unwrap();
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    until_status(proxy, "/new/x", StatusCode::OK).await;
    process.signal("TERM");
    assert_eq!(process.rest().0, Some(0));
}

/// A TLS client configuration trusting only the test CA.
fn test_ca_config() -> rustls::ClientConfig {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ca.crt"
    ))
    .unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn tls_client(
    h2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let config = test_ca_config();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    // ALPN offers exactly one protocol, so the server's choice is observable.
    let connector = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(h2)
        .build(connector)
}

#[tokio::test]
async fn https_listener_negotiates_h2_and_http11_and_sends_hsts() {
    let upstream = TestUpstream::start().await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{fixtures}/tls.crt\", key = \"{fixtures}/tls.key\" }}\n[upstream]\nurl = \"{{UPSTREAM}}\"\n[defaults]\nauth = \"none\"\n[[routes]]\nname = \"all\"\npath = \"/**\"\n"
    );
    let server = start_palisade(&config, upstream.addr).await;
    let url = format!("https://localhost:{}/secure", server.proxy_addr.port());
    for (h2, version) in [
        (true, http::Version::HTTP_2),
        (false, http::Version::HTTP_11),
    ] {
        let client = tls_client(h2);
        let response = client
            .request(Request::get(&url).body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=63072000; includeSubDomains"
        );
        let _ = response.into_body().collect().await;
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|r| r.headers["x-forwarded-proto"] == "https")
    );
    // Plain HTTP to the TLS port is not served.
    let plain = raw(server.proxy_addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
}

#[tokio::test]
async fn https_upstream_with_a_private_ca() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // An HTTPS upstream whose certificate only the test CA vouches for.
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let acceptor = palisade::proxy::server::tls_acceptor(
        Path::new(&format!("{fixtures}/tls.crt")),
        Path::new(&format!("{fixtures}/tls.key")),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepts = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"secret upstream"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    let routes = "[defaults]\nauth = \"none\"\n[[routes]]\nname = \"all\"\npath = \"/**\"\n";
    let trusting = format!(
        "[upstream]\nurl = \"https://localhost:{port}\"\nca_file = \"{fixtures}/ca.crt\"\n{routes}"
    );
    let server = start_palisade(&trusting, "127.0.0.1:1".parse().unwrap()).await;
    let reply = get(server.proxy_addr, "/x").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"secret upstream");
    // The idle TLS connection is looked at, found open, and used again.
    let reply = get(server.proxy_addr, "/y").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"secret upstream");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Without the CA the certificate is not trusted: 502, never a silent downgrade.
    let untrusting = format!("[upstream]\nurl = \"https://localhost:{port}\"\n{routes}");
    let server = start_palisade(&untrusting, "127.0.0.1:1".parse().unwrap()).await;
    assert_eq!(
        get(server.proxy_addr, "/x").await.status,
        StatusCode::BAD_GATEWAY
    );
}

/// The certificate the listener presents to a new TLS connection.
async fn presented_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    let config = test_ca_config();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn certificate_der(file: &str) -> Vec<u8> {
    let pem = std::fs::read(format!(
        "{}/tests/fixtures/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_reload_rotates_the_tls_certificate_in_place() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let dir = temp_dir("tls-rotation");
    std::fs::copy(format!("{fixtures}/tls.crt"), dir.join("cert.pem")).unwrap();
    std::fs::copy(format!("{fixtures}/tls.key"), dir.join("key.pem")).unwrap();
    let upstream = TestUpstream::start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[defaults]\nauth = \"none\"\n[[routes]]\nname = \"all\"\npath = \"/**\"\n",
        upstream.addr
    );
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    let server = palisade::start(palisade::config::load_file(&path, &test_env()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        presented_certificate(server.proxy_addr).await,
        certificate_der("tls.crt")
    );
    // cert-manager style: the files are replaced, the config is unchanged.
    std::fs::copy(format!("{fixtures}/tls2.crt"), dir.join("cert.pem")).unwrap();
    std::fs::copy(format!("{fixtures}/tls2.key"), dir.join("key.pem")).unwrap();
    assert!(palisade::reload::reload_with_env(&server.shared, &path, &test_env()).await);
    assert_eq!(
        presented_certificate(server.proxy_addr).await,
        certificate_der("tls2.crt")
    );
    // A broken key file fails the reload and the current certificate stays.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    assert!(!palisade::reload::reload_with_env(&server.shared, &path, &test_env()).await);
    assert_eq!(
        presented_certificate(server.proxy_addr).await,
        certificate_der("tls2.crt")
    );
}
