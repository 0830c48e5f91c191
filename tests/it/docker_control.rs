//! `DockerControl` against the real Docker engine, with containers of a
//! locally built busybox image (no registry). Every container is removed by
//! its guard, also when a test fails.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use backupd::container::docker::{
    DockerControl, HealthOutcome, StopOutcome, container_id_candidates,
};
use common::docker::{TestContainer, engine_api_version, require_test_image};

/// The engine and the test image, or `None` after a loud skip.
async fn setup() -> Option<(DockerControl, &'static str)> {
    let image = require_test_image()?;
    let host = std::env::var("DOCKER_HOST").ok();
    let docker = DockerControl::connect(host.as_deref())
        .await
        .unwrap_or_else(|e| panic!("connect to the Docker engine: {e}"));
    Some((docker, image))
}

fn version_pair(text: &str) -> (u32, u32) {
    let (major, minor) = text
        .split_once('.')
        .unwrap_or_else(|| panic!("`{text}` is not MAJOR.MINOR"));
    (major.parse().unwrap(), minor.parse().unwrap())
}

/// The effective gid of this process (from /proc).
fn egid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn connect_negotiates_the_engine_api_version() {
    let Some((docker, _)) = setup().await else {
        return;
    };
    let ours = version_pair(&docker.api_version());
    let engine = version_pair(&engine_api_version());
    let bollard = (1, 53);
    assert_eq!(
        ours,
        engine.min(bollard),
        "negotiated {}, engine speaks {}",
        docker.api_version(),
        engine_api_version()
    );
    // The engine on the development machine is Docker 20.10 (API 1.41),
    // older than bollard's default: negotiation must have downgraded.
    assert!(ours <= engine);
}

#[tokio::test]
async fn inspect_a_running_container_and_a_missing_one() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    let web = TestContainer::run_fast_stop(image, &[]);

    let state = docker
        .inspect(&web.name)
        .await
        .unwrap()
        .expect("the running container is found");
    assert_eq!(state.id, web.id);
    assert_eq!(state.name, web.name);
    assert!(state.running, "{state:?}");
    assert_eq!(state.status, "running");
    assert_eq!(state.health, None, "no healthcheck configured");

    let by_id = docker.inspect(&web.id).await.unwrap().unwrap();
    assert_eq!(by_id.id, web.id);
    // Only the exact name or the full id: the engine would also resolve an
    // id prefix, which is how an all-hex name found another container.
    let by_prefix = docker.inspect(&web.id[..12]).await.unwrap();
    assert!(by_prefix.is_none(), "{by_prefix:?}");

    let missing = docker
        .inspect(&format!("{}-missing", web.name))
        .await
        .unwrap();
    assert!(missing.is_none(), "{missing:?}");
}

/// The suite the in-memory fake passes too, so the restore procedure's
/// fast tests run against what the engine really does.
#[tokio::test]
async fn docker_passes_the_suite_every_container_backend_passes() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    let web = TestContainer::run_fast_stop(image, &[]);
    backupd::container::conformance::check(&docker, &web.name, &format!("{}-missing", web.name))
        .await;
    assert!(web.cli_running(), "the suite leaves it running");
}

#[tokio::test]
async fn stop_a_running_container_then_again() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    let web = TestContainer::run_fast_stop(image, &[]);

    let outcome = docker.stop(&web.name, Duration::from_secs(10)).await;
    assert_eq!(outcome.unwrap(), StopOutcome::Stopped);
    let state = docker.inspect(&web.name).await.unwrap().unwrap();
    assert!(!state.running, "{state:?}");
    assert_eq!(state.status, "exited");
    assert!(!web.cli_running(), "the CLI sees it stopped too");

    let again = docker.stop(&web.name, Duration::from_secs(10)).await;
    assert_eq!(again.unwrap(), StopOutcome::AlreadyStopped);

    let missing = docker
        .stop(&format!("{}-missing", web.name), Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("stopping container") && missing.contains("no such container"),
        "{missing}"
    );
}

#[tokio::test]
async fn stop_gives_the_grace_period_before_the_kill() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    // busybox sleep as PID 1 ignores SIGTERM: only the kill after the grace
    // period stops it.
    let web = TestContainer::run(image, &[], &[]);
    let started = Instant::now();
    let outcome = docker.stop(&web.name, Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert_eq!(outcome.unwrap(), StopOutcome::Stopped);
    assert!(
        took >= Duration::from_millis(1800),
        "stopped after {took:?}, before the 2 s grace"
    );
    assert!(!web.cli_running());
    assert_eq!(web.cli_inspect("{{.State.ExitCode}}"), "137", "killed");
}

#[tokio::test]
async fn a_stop_request_timeout_is_checked_by_inspecting_again() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    // The request gives up after 1 s, but the engine goes on with the stop
    // and kills the container after its 3 s grace: reported as stopped.
    let slow = TestContainer::run(image, &[], &[]);
    let outcome = docker
        .stop_with_request_timeout(&slow.name, Duration::from_secs(3), Duration::from_secs(1))
        .await;
    assert_eq!(outcome.unwrap(), StopOutcome::Stopped);
    assert!(!slow.cli_running());

    // With a 60 s grace the container is still running when we stop
    // looking: an error that says so, never a claimed stop.
    let slower = TestContainer::run(image, &[], &[]);
    let started = Instant::now();
    let err = docker
        .stop_with_request_timeout(
            &slower.name,
            Duration::from_secs(60),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err()
        .to_string();
    eprintln!("stop request timeout: {err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(err.contains(&slower.name), "{err}");
    assert!(err.contains("still running"), "{err}");
    assert!(slower.cli_running(), "still in its grace period");
}

#[tokio::test]
async fn start_a_stopped_container_and_start_twice() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    let web = TestContainer::run_fast_stop(image, &[]);
    web.cli_stop();
    assert!(!web.cli_running());

    docker.start(&web.name).await.unwrap();
    let state = docker.inspect(&web.name).await.unwrap().unwrap();
    assert!(state.running, "{state:?}");
    assert!(web.cli_running());

    docker
        .start(&web.name)
        .await
        .expect("starting a running container is fine");
    assert!(web.cli_running());

    let err = docker
        .start(&format!("{}-missing", web.name))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("starting container") && err.contains("no such container"),
        "{err}"
    );
}

#[tokio::test]
async fn wait_healthy_with_a_passing_healthcheck() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    let web = TestContainer::run_fast_stop(
        image,
        &[
            "--health-cmd",
            "/bin/busybox true",
            "--health-interval",
            "1s",
        ],
    );
    let outcome = docker
        .wait_healthy(&web.name, Duration::from_secs(30))
        .await;
    assert_eq!(outcome.unwrap(), HealthOutcome::Healthy);
    let state = docker.inspect(&web.name).await.unwrap().unwrap();
    assert_eq!(state.health.as_deref(), Some("healthy"));
}

#[tokio::test]
async fn wait_healthy_without_a_healthcheck() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    let web = TestContainer::run_fast_stop(image, &[]);
    let started = Instant::now();
    let outcome = docker
        .wait_healthy(&web.name, Duration::from_secs(30))
        .await;
    assert_eq!(outcome.unwrap(), HealthOutcome::NoHealthcheck);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
}

#[tokio::test]
async fn wait_healthy_with_a_failing_healthcheck() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    let web = TestContainer::run_fast_stop(
        image,
        &[
            "--health-cmd",
            "/bin/busybox false",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
    );
    let started = Instant::now();
    let outcome = docker
        .wait_healthy(&web.name, Duration::from_secs(8))
        .await
        .unwrap();
    assert!(
        matches!(outcome, HealthOutcome::Unhealthy | HealthOutcome::TimedOut),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(12));
}

#[tokio::test]
async fn wait_healthy_on_a_stopped_container() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    let web = TestContainer::run_fast_stop(
        image,
        &[
            "--health-cmd",
            "/bin/busybox true",
            "--health-interval",
            "1s",
        ],
    );
    web.cli_stop();
    let outcome = docker.wait_healthy(&web.name, Duration::from_secs(5)).await;
    assert_eq!(outcome.unwrap(), HealthOutcome::NotRunning);
    let err = docker
        .wait_healthy(&format!("{}-missing", web.name), Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such container"), "{err}");
}

#[tokio::test]
async fn connect_to_a_missing_socket_names_the_path_and_the_ids() {
    let err = DockerControl::connect(Some("unix:///tmp/nope.sock"))
        .await
        .map(|d| d.api_version())
        .unwrap_err();
    let text = err.to_string();
    eprintln!("missing socket: {text}");
    assert!(text.contains("/tmp/nope.sock"), "{text}");
    assert!(text.contains(&format!("uid {}", common::euid())), "{text}");
    assert!(text.contains(&format!("gid {}", egid())), "{text}");
    assert_eq!(err.exit_code(), 1);

    let bad = DockerControl::connect(Some("ftp://engine"))
        .await
        .map(|d| d.api_version())
        .unwrap_err();
    assert!(bad.to_string().contains("DOCKER_HOST"), "{bad}");
    assert_eq!(bad.exit_code(), 2);
}

#[tokio::test]
async fn connect_errors_for_a_dead_socket_and_a_directory() {
    let work = common::temp_dir();
    // A socket file nobody listens on: connection refused.
    let dead = work.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    let err = DockerControl::connect(Some(&format!("unix://{}", dead.display())))
        .await
        .map(|d| d.api_version())
        .unwrap_err()
        .to_string();
    eprintln!("dead socket: {err}");
    assert!(err.contains(&dead.display().to_string()), "{err}");
    assert!(err.contains("connection refused"), "{err}");

    // What Compose leaves when the host path of the socket mount is missing.
    let dir = work.path().join("docker.sock");
    std::fs::create_dir(&dir).unwrap();
    let err = DockerControl::connect(Some(&dir.display().to_string()))
        .await
        .map(|d| d.api_version())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("is a directory"), "{err}");
}

#[tokio::test]
async fn own_container_id_is_none_on_the_host() {
    let Some((docker, _)) = setup().await else {
        return;
    };
    assert_eq!(docker.own_container_id().await, None);
}

#[tokio::test]
async fn own_container_id_candidates_from_inside_a_container() {
    let Some((docker, image)) = setup().await else {
        return;
    };
    let web = TestContainer::run_fast_stop(image, &[]);
    let mountinfo = web.exec(&["/bin/busybox", "cat", "/proc/self/mountinfo"]);
    let cgroup = web.exec(&["/bin/busybox", "cat", "/proc/self/cgroup"]);
    let hostname = web.exec(&["/bin/busybox", "hostname"]);

    let candidates = container_id_candidates(&mountinfo, &cgroup, Some(&hostname));
    assert_eq!(
        candidates.first(),
        Some(&web.id),
        "mountinfo:\n{mountinfo}\ncgroup:\n{cgroup}"
    );
    // Each candidate names this container (the full id, or a prefix of it
    // that own_container_id confirms with the engine).
    for candidate in &candidates {
        assert!(
            web.id.starts_with(candidate.as_str()),
            "candidate {candidate}"
        );
    }
    let state = docker.inspect(&candidates[0]).await.unwrap().unwrap();
    assert_eq!(state.id, web.id);
}

/// The socket refuses an unprivileged user: the error names the socket,
/// the ids and the `group_add` entry with the socket's group id. Runs the
/// ignored `permission_denied_child` test of this binary as nobody.
#[test]
fn socket_permission_error_explains_group_add() {
    use std::os::unix::fs::MetadataExt;

    let socket = "/var/run/docker.sock";
    let Some(meta) = common::require(
        "the Docker socket at /var/run/docker.sock",
        std::fs::metadata(socket).ok(),
    ) else {
        return;
    };
    let usable = common::is_root()
        && meta.mode() & 0o002 == 0
        && meta.gid() != 65534
        && common::which("setpriv").is_some();
    if common::require(
        "root, `setpriv` and a socket not open to everyone (to connect as nobody)",
        usable.then_some(()),
    )
    .is_none()
    {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "docker_control::permission_denied_child",
            "--ignored",
            "--nocapture",
        ])
        .env("BACKUPD_TEST_EACCES_CHILD", meta.gid().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child as nobody failed: {}\n{stdout}\n{stderr}",
        out.status
    );
}

#[tokio::test]
#[ignore = "run as nobody by socket_permission_error_explains_group_add"]
async fn permission_denied_child() {
    let Ok(gid) = std::env::var("BACKUPD_TEST_EACCES_CHILD") else {
        return;
    };
    let err = DockerControl::connect(None)
        .await
        .map(|d| d.api_version())
        .unwrap_err()
        .to_string();
    eprintln!("as nobody: {err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("/var/run/docker.sock"), "{err}");
    assert!(err.contains("uid 65534, gid 65534"), "{err}");
    assert!(err.contains(&format!("group_add: [\"{gid}\"]")), "{err}");
}
