//! A private `redis-server` per test, on a free port, that the test can
//! kill, pause and restart; and a 3-node Redis Cluster.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require_binary(name: &str) {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{name}` is not on PATH: the rate-limit tests start their own Redis; install it (Debian: apt-get install redis-server)"
    );
}

/// One redis-server process.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
    tls: bool,
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

impl RedisServer {
    /// Starts on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(free_port(), Vec::new())
    }

    /// TLS only (`rediss://`), with the test CA's `localhost` certificate.
    pub fn start_tls() -> Self {
        let port = free_port();
        let extra = [
            "--tls-port",
            &port.to_string(),
            "--tls-auth-clients",
            "no",
            "--tls-cert-file",
            &fixture("tls.crt"),
            "--tls-key-file",
            &fixture("tls.key"),
            "--tls-ca-cert-file",
            &fixture("ca.crt"),
        ]
        .map(String::from)
        .to_vec();
        Self::start_with(port, extra)
    }

    fn start_with(port: u16, extra: Vec<String>) -> Self {
        require_binary("redis-server");
        let dir =
            std::env::temp_dir().join(format!("palisade-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = extra.iter().any(|a| a == "--tls-port");
        let mut server = Self {
            port,
            child: None,
            dir,
            extra,
            tls,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        // A TLS server listens only on its --tls-port.
        let plain_port = if self.tls {
            "0".to_string()
        } else {
            self.port.to_string()
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &plain_port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        // A bound, not a timing assertion: a loaded CI machine can take a
        // while to start a process.
        for _ in 0..3000 {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} never answered PING", self.port);
    }

    /// Whether it answers PING now.
    pub fn ping(&self) -> bool {
        if self.tls {
            return self.cli(&["ping"]).contains("PONG");
        }
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// SIGKILL: Redis is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (empty: it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP / SIGCONT: Redis hangs without closing connections.
    pub fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            let signal = if paused { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Runs a redis-cli command against it.
    pub fn cli(&self, args: &[&str]) -> String {
        require_binary("redis-cli");
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if self.tls {
            cmd.args(["--tls", "--cacert", &fixture("ca.crt")]);
        }
        let out = cmd.args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.pause(false);
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters, no replicas, slots spread by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        require_binary("redis-cli");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port();
                RedisServer::start_with(
                    port,
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        format!("nodes-{port}.conf"),
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for _ in 0..500 {
            if nodes
                .iter()
                .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
            {
                return Self { nodes };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the cluster never reached cluster_state:ok");
    }

    /// The node URLs for `redis_cluster`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
