//! Docker fixtures for the integration tests, with no registry: a
//! `FROM scratch` image holding a static busybox, built locally once per test
//! process, and uniquely named containers that are removed on drop.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{is_root, require, temp_dir, which};

/// The test image: `/bin/busybox` with its applets linked into `/bin` (so a
/// `--health-cmd`, which the CLI runs through `/bin/sh -c`, works), running
/// `sleep 3600` by default.
pub const TEST_IMAGE: &str = "backupd-test/busybox:latest";

/// Bumped whenever the recipe below changes, so an older image is rebuilt.
const RECIPE: &str = "1";

const BUSYBOX: &str = "/bin/busybox";

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
LABEL backupd-test.recipe="RECIPE"
ENTRYPOINT ["/bin/busybox"]
CMD ["sleep", "3600"]
"#;

/// `docker ARGS`, output captured; panics when the CLI cannot be spawned.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn docker {args:?}: {e}"))
}

/// `docker ARGS`, its trimmed stdout when it exits 0, else the error text.
pub fn docker_ok(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn docker {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {args:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The engine's API version as the CLI reports it (`docker version`).
pub fn engine_api_version() -> String {
    docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]).expect("docker version")
}

/// The test image, built on first use in this process (or reused when an
/// image of the current recipe exists). When a prerequisite is missing (no
/// `docker` CLI, no reachable engine, no static busybox) this goes through
/// [`require`]: a loud skip, or a panic under `CI=true`.
pub fn require_test_image() -> Option<&'static str> {
    static IMAGE: OnceLock<Result<(), String>> = OnceLock::new();
    match IMAGE.get_or_init(prepare_image) {
        Ok(()) => Some(TEST_IMAGE),
        Err(missing) => require::<&'static str>(missing, None),
    }
}

fn prepare_image() -> Result<(), String> {
    if which("docker").is_none() {
        return Err("the `docker` CLI on PATH".into());
    }
    docker_ok(&["version", "--format", "{{.Server.APIVersion}}"])
        .map_err(|e| format!("a reachable Docker engine ({e})"))?;

    let label = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"backupd-test.recipe\"}}",
        TEST_IMAGE,
    ]);
    if label.as_deref() == Ok(RECIPE) {
        return Ok(());
    }

    if !Path::new(BUSYBOX).exists() && is_root() && which("apt-get").is_some() {
        eprintln!("{BUSYBOX} is missing: apt-get install -y busybox-static");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "busybox-static"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if !Path::new(BUSYBOX).exists() {
        return Err(format!(
            "a static busybox at {BUSYBOX} (apt-get install busybox-static)"
        ));
    }

    let context = temp_dir();
    fs::copy(BUSYBOX, context.path().join("busybox"))
        .map_err(|e| format!("a readable {BUSYBOX} ({e})"))?;
    fs::write(
        context.path().join("Dockerfile"),
        DOCKERFILE.replace("RECIPE", RECIPE),
    )
    .expect("write the Dockerfile");
    let dir = context.path().to_string_lossy().into_owned();
    docker_ok(&[
        "build",
        "-q",
        "--label",
        "backupd-test=1",
        "-t",
        TEST_IMAGE,
        &dir,
    ])
    .map_err(|e| format!("a buildable busybox test image ({e})"))?;

    // A dynamically linked busybox builds fine but cannot run from scratch.
    docker_ok(&[
        "run",
        "--rm",
        "--label",
        "backupd-test=1",
        TEST_IMAGE,
        "true",
    ])
    .map_err(|e| {
        let _ = docker_ok(&["rmi", TEST_IMAGE]);
        format!("a statically linked {BUSYBOX} (apt-get install busybox-static): {e}")
    })?;
    Ok(())
}

/// A name no other test (or test process) uses: `backupd-test-<random>`.
pub fn unique_container_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("backupd-test-{:x}{nanos:08x}{n:x}", std::process::id())
}

/// A container of the test image, removed (`docker rm -f`) on drop, also
/// when the test panics.
#[derive(Debug)]
pub struct TestContainer {
    pub name: String,
    /// The full container id.
    pub id: String,
}

impl TestContainer {
    /// `docker run -d --name backupd-test-<random> OPTIONS IMAGE ARGS`.
    /// `options` go before the image (e.g. `--stop-signal SIGKILL`,
    /// `--health-cmd …`); `args` replace the default `sleep 3600`.
    pub fn run(image: &str, options: &[&str], args: &[&str]) -> TestContainer {
        let name = unique_container_name();
        let mut argv = vec!["run", "-d", "--name", &name, "--label", "backupd-test=1"];
        argv.extend_from_slice(options);
        argv.push(image);
        argv.extend_from_slice(args);
        match docker_ok(&argv) {
            Ok(id) => TestContainer { name, id },
            Err(e) => {
                let _ = docker(&["rm", "-f", &name]);
                panic!("start a test container: {e}");
            }
        }
    }

    /// A container that stops at once: busybox `sleep` runs as PID 1, which
    /// ignores SIGTERM, so without this `docker stop` waits out its grace.
    pub fn run_fast_stop(image: &str, options: &[&str]) -> TestContainer {
        let mut all = vec!["--stop-signal", "SIGKILL"];
        all.extend_from_slice(options);
        Self::run(image, &all, &[])
    }

    /// `docker inspect` of one field (a Go template such as `{{.State.Status}}`).
    pub fn cli_inspect(&self, template: &str) -> String {
        docker_ok(&["inspect", "--format", template, &self.name])
            .unwrap_or_else(|e| panic!("inspect {}: {e}", self.name))
    }

    /// `State.Running` as the CLI reports it.
    pub fn cli_running(&self) -> bool {
        self.cli_inspect("{{.State.Running}}") == "true"
    }

    /// `docker stop -t 0` (a kill after no grace).
    pub fn cli_stop(&self) {
        docker_ok(&["stop", "-t", "0", &self.name])
            .unwrap_or_else(|e| panic!("stop {}: {e}", self.name));
    }

    /// `docker exec NAME ARGS`, its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut argv = vec!["exec", self.name.as_str()];
        argv.extend_from_slice(args);
        docker_ok(&argv).unwrap_or_else(|e| panic!("exec in {}: {e}", self.name))
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "could not remove test container {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("could not remove test container {}: {e}", self.name),
        }
    }
}

/// A unix-socket forwarder between backupd (`DOCKER_HOST=unix://…` of
/// [`EngineLink::docker_host`]) and the real engine socket, which a test can
/// cut and bring back: "the Docker engine lost mid-restore" without stopping
/// the engine the other tests use. Cutting closes every forwarded connection
/// and removes the socket, as an engine restart does.
pub struct EngineLink {
    dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    up: std::sync::Arc<std::sync::Mutex<Option<LinkUp>>>,
}

struct LinkUp {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    streams: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
    acceptor: std::thread::JoinHandle<()>,
}

/// The engine's socket on this machine.
const ENGINE_SOCKET: &str = "/var/run/docker.sock";

impl EngineLink {
    /// A forwarder, up.
    pub fn start() -> EngineLink {
        let dir = temp_dir();
        let socket = dir.path().join("docker.sock");
        let link = EngineLink {
            dir,
            socket,
            up: Default::default(),
        };
        link.restore();
        link
    }

    /// `unix:///…/docker.sock`, for DOCKER_HOST.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The engine is gone: every connection closed, the socket removed.
    pub fn cut(&self) {
        let Some(up) = self.up.lock().unwrap().take() else {
            return;
        };
        up.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = std::os::unix::net::UnixStream::connect(&self.socket);
        let _ = up.acceptor.join();
        let _ = fs::remove_file(&self.socket);
        for stream in up.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The engine answers again.
    pub fn restore(&self) {
        let mut up = self.up.lock().unwrap();
        if up.is_some() {
            return;
        }
        let _ = fs::remove_file(&self.socket);
        let listener = std::os::unix::net::UnixListener::bind(&self.socket)
            .unwrap_or_else(|e| panic!("bind {}: {e}", self.socket.display()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let streams: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>> =
            Default::default();
        let acceptor = {
            let stop = stop.clone();
            let streams = streams.clone();
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(engine) = std::os::unix::net::UnixStream::connect(ENGINE_SOCKET) else {
                        continue;
                    };
                    let mut all = streams.lock().unwrap();
                    for s in [&client, &engine] {
                        if let Ok(clone) = s.try_clone() {
                            all.push(clone);
                        }
                    }
                    drop(all);
                    pipe(client.try_clone().unwrap(), engine.try_clone().unwrap());
                    pipe(engine, client);
                }
            })
        };
        *up = Some(LinkUp {
            stop,
            streams,
            acceptor,
        });
    }
}

/// Copies `from` into `to` on a thread until either side closes.
fn pipe(mut from: std::os::unix::net::UnixStream, mut to: std::os::unix::net::UnixStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

impl Drop for EngineLink {
    fn drop(&mut self) {
        self.cut();
        let _ = &self.dir;
    }
}
