//! TLS for the tests: certificates made with the `openssl` command into a
//! temporary directory, and nginx (Debian's) terminating TLS in front of
//! the real OTLP receiver: gRPC (HTTP/2, `grpc_pass`) and HTTP.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::free_ports;

fn temp_dir(what: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "syscope-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and certificates it signed (P-256 keys), in a temp dir.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// `ca` (the trusted one), `other-ca` (a stranger), and signed by `ca`:
    /// `server` (localhost, 127.0.0.1), `expired` (the same names, valid
    /// only in January 2020), `elsewhere` (valid, for collector.invalid
    /// only), `client` (for mTLS).
    pub fn new() -> Pki {
        let dir = temp_dir("pki");
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = ca_default\n\
             [ca_default]\ndir = .\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
             default_md = sha256\npolicy = any\ncopy_extensions = copy\nunique_subject = no\n\
             x509_extensions = leaf\n\
             [any]\ncommonName = supplied\n\
             [leaf]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth, clientAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        for ca in ["ca", "other-ca"] {
            openssl(
                &dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                    "-subj",
                    &format!("/CN=syscope test {ca}"),
                    "-days",
                    "30",
                ],
            );
        }
        let pki = Pki { dir };
        let here = "subjectAltName=DNS:localhost,IP:127.0.0.1";
        pki.sign("server", "localhost", here, &["-days", "30"]);
        let january_2020 = [
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
        ];
        pki.sign("expired", "localhost", here, &january_2020);
        let elsewhere = "subjectAltName=DNS:collector.invalid";
        pki.sign(
            "elsewhere",
            "collector.invalid",
            elsewhere,
            &["-days", "30"],
        );
        pki.sign("client", "syscope-agent", here, &["-days", "30"]);
        pki
    }

    fn sign(&self, name: &str, cn: &str, san: &str, validity: &[&str]) {
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                san,
            ],
        );
        let mut args = vec![
            "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
            "-notext", "-in",
        ];
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        args.extend([csr.as_str(), "-out", crt.as_str()]);
        args.extend_from_slice(validity);
        openssl(&self.dir, &args);
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A path as a string, for an environment variable.
    pub fn file(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// How one nginx listener terminates TLS.
#[derive(Clone, Copy, Debug)]
pub struct Listener<'a> {
    /// Certificate and key file names in the PKI dir (`server`, `expired`).
    pub cert: &'a str,
    /// Require a client certificate signed by the CA.
    pub mtls: bool,
    /// gRPC (HTTP/2 to the receiver's gRPC port) or HTTP/1.1 to its HTTP port.
    pub grpc: bool,
}

/// nginx in front of a receiver, one TLS port per [`Listener`]; stopped on drop.
pub struct Nginx {
    child: Child,
    pub ports: Vec<u16>,
    dir: PathBuf,
}

pub fn nginx_path() -> PathBuf {
    PathBuf::from("/usr/sbin/nginx")
}

impl Nginx {
    pub fn start(
        pki: &Pki,
        grpc_upstream: u16,
        http_upstream: u16,
        listeners: &[Listener],
    ) -> Nginx {
        let dir = temp_dir("nginx");
        let ports: Vec<u16> = listeners.iter().map(|_| free_ports::<1>()[0]).collect();
        let mut servers = String::new();
        for (l, port) in listeners.iter().zip(&ports) {
            let mtls = if l.mtls {
                format!(
                    "ssl_client_certificate {};\n    ssl_verify_client on;\n",
                    pki.file("ca.crt")
                )
            } else {
                String::new()
            };
            let (http2, pass) = if l.grpc {
                (
                    "http2",
                    format!("grpc_pass grpc://127.0.0.1:{grpc_upstream};"),
                )
            } else {
                ("", format!("proxy_pass http://127.0.0.1:{http_upstream};"))
            };
            servers.push_str(&format!(
                "  server {{\n    listen 127.0.0.1:{port} ssl {http2};\n    \
                 ssl_certificate {cert};\n    ssl_certificate_key {key};\n    {mtls}    \
                 location / {{ {pass} }}\n  }}\n",
                cert = pki.file(&format!("{}.crt", l.cert)),
                key = pki.file(&format!("{}.key", l.cert)),
            ));
        }
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             client_body_buffer_size 4m;\n  client_max_body_size 64m;\n{servers}}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx_path())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let n = Nginx { child, ports, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in &n.ports {
            let a = SocketAddr::from(([127, 0, 0, 1], *port));
            while TcpStream::connect(a).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nginx not listening:\n{}",
                    n.log()
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        n
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// stunnel (Debian's) terminating TLS in front of one upstream port and
/// requiring a client certificate signed by the CA, as a collector with
/// client authentication does: a missing certificate fails the handshake
/// (a TLS alert), where nginx would answer HTTP 400. No ALPN: gRPC clients
/// must assume HTTP/2. Stopped on drop.
pub struct Stunnel {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Stunnel {
    pub fn start(pki: &Pki, upstream: u16) -> Stunnel {
        let dir = temp_dir("stunnel");
        let port = free_ports::<1>()[0];
        let conf = format!(
            "foreground = yes\npid =\ndebug = 5\noutput = {log}\n\
             [otlp]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{upstream}\n\
             cert = {cert}\nkey = {key}\nCAfile = {ca}\nverifyChain = yes\nrequireCert = yes\n",
            log = dir.join("stunnel.log").display(),
            cert = pki.file("server.crt"),
            key = pki.file("server.key"),
            ca = pki.file("ca.crt"),
        );
        std::fs::write(dir.join("stunnel.conf"), conf).unwrap();
        let child = Command::new("stunnel4")
            .arg(dir.join("stunnel.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stunnel4");
        let s = Stunnel { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "stunnel not listening:\n{}",
                s.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stunnel.log")).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
