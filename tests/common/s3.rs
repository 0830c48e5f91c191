//! A real S3-protocol server for the tests, in the test process: `s3s-fs`
//! (objects as files in a temporary folder) behind `s3s`, which checks every
//! request's SigV4 signature against one access key. It listens on
//! 127.0.0.1 on its own Tokio runtime thread, so a `backupd` child process
//! reaches it over real TCP, and it can be stopped and started again on the
//! same port with its data kept.
//!
//! A thin layer in front of s3s-fs adds what the tests need and s3s-fs
//! lacks: ListMultipartUploads (read from s3s-fs's folder), a check of each
//! part's `x-amz-checksum-sha256`, a refusal of aws-chunked trailing
//! checksums (as many S3-compatible servers refuse them), a delay per part
//! (to stop or cancel in the middle of an upload) and injected `SlowDown`
//! errors (to see retries).
//!
//! It needs only [`super::files`] and [`super::prereq`] of the kit, so
//! `examples/s3_test_server.rs` includes the three by path.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::TryStreamExt;
use hyper_util::rt::TokioIo;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::files::temp_dir;
use super::prereq::require;

pub const ACCESS_KEY: &str = "backupd-test-access-key";
pub const SECRET_KEY: &str = "backupd-test-secret-key-0123456789";
pub const REGION: &str = "us-east-1";
pub const BUCKET: &str = "backupd-test";

thread_local! {
    static SERVER_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// True on the server's own threads (lets a test's allocation counter leave
/// the server out). Never allocates, so a global allocator may call it.
pub fn is_server_thread() -> bool {
    SERVER_THREAD.try_with(Cell::get).unwrap_or(false)
}

/// What the server saw and how it should misbehave; kept across restarts.
#[derive(Default)]
pub struct Control {
    /// UploadPart requests whose body arrived whole (counted before the delay).
    parts_received: AtomicUsize,
    /// Of those, the ones that carried a correct `x-amz-checksum-sha256`.
    parts_with_checksum: AtomicUsize,
    /// Requests refused for using aws-chunked trailing checksums.
    trailer_requests: AtomicUsize,
    /// PutObject/UploadPart requests still to answer with 503 SlowDown.
    fail_next: AtomicUsize,
    /// SlowDown answers given.
    failures_sent: AtomicUsize,
    part_delay_ms: AtomicU64,
    /// (upload id, part number) → the part's SHA-256 (base64) as received.
    part_checksums: Mutex<HashMap<(String, i32), String>>,
    /// Every PutObject and CreateMultipartUpload, in order.
    writes: Mutex<Vec<WriteSeen>>,
    /// When set, requests must carry this `x-amz-security-token` (a session
    /// token, which the SigV4 signature covers) or get AccessDenied.
    required_session_token: Mutex<Option<String>>,
    /// Every `x-amz-security-token` received.
    session_tokens: Mutex<Vec<String>>,
}

/// The object options of one PutObject or CreateMultipartUpload request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSeen {
    pub op: &'static str,
    pub key: String,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    pub checksum_algorithm: Option<String>,
}

/// The running (or stopped) test server.
pub struct S3Server {
    root: TempDir,
    port: u16,
    control: Arc<Control>,
    running: Option<Running>,
}

struct Running {
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl S3Server {
    /// Starts a server with the bucket [`BUCKET`] on a free port. `None`
    /// (after a loud skip message; a panic under `CI=true`) when it cannot.
    pub fn start() -> Option<S3Server> {
        let started = Self::try_start().map_err(|e| eprintln!("S3 test server: {e}"));
        require(
            "an S3-protocol test server (s3s-fs) on 127.0.0.1",
            started.ok(),
        )
    }

    /// [`S3Server::start`] without the prerequisite handling: why it could
    /// not start, for a caller that is not a test.
    pub fn try_start() -> Result<S3Server, String> {
        let root = temp_dir();
        std::fs::create_dir_all(root.path().join(BUCKET))
            .map_err(|e| format!("create the bucket folder: {e}"))?;
        let control = Arc::new(Control::default());
        let (running, port) = spawn(root.path(), 0, control.clone())?;
        Ok(S3Server {
            root,
            port,
            control,
            running: Some(running),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// The environment a `backupd` child process needs to use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_S3_BUCKET", BUCKET.to_string()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Library settings for this server, with `prefix`.
    pub fn settings(&self, prefix: &str) -> backupd::store::s3::S3Settings {
        let mut settings = backupd::store::s3::S3Settings::new(BUCKET);
        settings.prefix = prefix.to_string();
        settings.region = Some(REGION.to_string());
        settings.endpoint = Some(self.endpoint());
        settings.force_path_style = true;
        settings.checksum_when_required = true;
        settings.access_key_id = Some(ACCESS_KEY.to_string());
        settings.secret_access_key = Some(SECRET_KEY.to_string());
        settings
    }

    /// A store on this server under `prefix`, with [`S3Server::settings`].
    pub async fn store(&self, prefix: &str) -> backupd::store::s3::S3Store {
        connect(self.settings(prefix)).await
    }

    /// Stops listening and drops every open connection (requests in flight
    /// fail as on a crash); the stored data stays.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
            let _ = running.thread.join();
        }
    }

    /// Starts again on the same port with the same data. Panics when the
    /// port cannot be bound again.
    pub fn restart(&mut self) {
        self.stop();
        let (running, _) = spawn(self.root.path(), self.port, self.control.clone())
            .unwrap_or_else(|e| panic!("restart the S3 test server on {}: {e}", self.port));
        self.running = Some(running);
    }

    /// The server's storage folder: `BUCKET/KEY` files plus s3s-fs's hidden
    /// bookkeeping (`.upload-*.json`, `.upload_id-*.part-*`, `.bucket-*`).
    #[allow(
        dead_code,
        reason = "examples/s3_test_server.rs prints it; no test needs it"
    )]
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The file holding object `key` (to corrupt it, or to plant objects
    /// without going through the API).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// Every stored object (key, size), sorted, read from the folder.
    pub fn objects(&self) -> Vec<(String, u64)> {
        let bucket = self.root.path().join(BUCKET);
        let mut found = Vec::new();
        let mut dirs = vec![bucket.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    dirs.push(path);
                } else {
                    let key = path.strip_prefix(&bucket).unwrap().to_string_lossy();
                    found.push((key.into_owned(), meta.len()));
                }
            }
        }
        found.sort();
        found
    }

    /// Multipart uploads neither completed nor aborted (key, upload id),
    /// read from the folder, independently of the S3 API.
    pub fn incomplete_uploads(&self) -> Vec<(String, String)> {
        open_uploads(self.root.path())
            .into_iter()
            .map(|u| (u.key, u.upload_id))
            .collect()
    }

    /// Stored part files (of uploads not yet completed or aborted).
    pub fn part_files(&self) -> Vec<String> {
        let mut parts: Vec<String> = std::fs::read_dir(self.root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload_id-") && n.contains(".part-"))
            .collect();
        parts.sort();
        parts
    }

    /// Holds every UploadPart this long after its body arrived.
    pub fn set_part_delay(&self, delay: Duration) {
        self.control
            .part_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answers the next `n` PutObject/UploadPart requests with 503 SlowDown.
    pub fn fail_next_uploads(&self, n: usize) {
        self.control.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn failures_sent(&self) -> usize {
        self.control.failures_sent.load(Ordering::SeqCst)
    }

    pub fn parts_received(&self) -> usize {
        self.control.parts_received.load(Ordering::SeqCst)
    }

    pub fn parts_with_checksum(&self) -> usize {
        self.control.parts_with_checksum.load(Ordering::SeqCst)
    }

    /// The object options of every PutObject and CreateMultipartUpload so far.
    pub fn writes_seen(&self) -> Vec<WriteSeen> {
        self.control.writes.lock().unwrap().clone()
    }

    /// Refuses every request without `x-amz-security-token: TOKEN` from now on.
    pub fn require_session_token(&self, token: &str) {
        *self.control.required_session_token.lock().unwrap() = Some(token.to_string());
    }

    /// Every session token received so far.
    pub fn session_tokens_seen(&self) -> Vec<String> {
        self.control.session_tokens.lock().unwrap().clone()
    }

    pub fn trailer_requests(&self) -> usize {
        self.control.trailer_requests.load(Ordering::SeqCst)
    }

    /// Polls until at least `n` parts arrived; false after `give_up`.
    pub fn wait_for_parts(&self, n: usize, give_up: Duration) -> bool {
        let deadline = std::time::Instant::now() + give_up;
        while self.parts_received() < n {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// A store with `settings` (a test's variation of [`S3Server::settings`]),
/// which must be valid and connect.
pub async fn connect(settings: backupd::store::s3::S3Settings) -> backupd::store::s3::S3Store {
    backupd::store::s3::S3Store::connect(settings.validate().unwrap())
        .await
        .unwrap()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server thread on `port` (0: any) and returns it with the port.
fn spawn(root: &Path, port: u16, control: Arc<Control>) -> Result<(Running, u16), String> {
    let root = root.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<u16, String>>();
    let (shutdown, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("s3-test-server".into())
        .spawn(move || {
            SERVER_THREAD.with(|f| f.set(true));
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("s3-test-server")
                .on_thread_start(|| SERVER_THREAD.with(|f| f.set(true)))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("build a Tokio runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let service = match build_service(&root, control) {
                    Ok(service) => service,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Tokio sets SO_REUSEADDR, so a restart can take the port back
                // while old connections sit in TIME_WAIT.
                let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("bind 127.0.0.1:{port}: {e}")));
                        return;
                    }
                };
                let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
                let _ = ready_tx.send(Ok(bound));
                loop {
                    tokio::select! {
                        _ = &mut shutdown_rx => break,
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let service = service.clone();
                            tokio::spawn(async move {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(socket), service)
                                    .await;
                            });
                        }
                    }
                }
            });
            // Dropping the runtime drops every connection task: clients see
            // their connections close, as when a server dies.
            drop(runtime);
        })
        .map_err(|e| format!("spawn the server thread: {e}"))?;
    match ready_rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(port)) => Ok((Running { shutdown, thread }, port)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(e) => Err(format!("the server thread did not start: {e}")),
    }
}

fn build_service(root: &Path, control: Arc<Control>) -> Result<s3s::service::S3Service, String> {
    let fs = s3s_fs::FileSystem::new(root)
        .map_err(|e| format!("s3s-fs on {}: {e:?}", root.display()))?;
    let mut builder = s3s::service::S3ServiceBuilder::new(TestS3 {
        fs,
        root: root.to_path_buf(),
        control,
    });
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    Ok(builder.build())
}

/// s3s-fs plus the test hooks; every operation the store uses is forwarded.
struct TestS3 {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    control: Arc<Control>,
}

impl TestS3 {
    /// Refuses aws-chunked trailing checksums, as many S3-compatible servers
    /// do (the SDK's default since early 2025).
    fn refuse_trailers(&self, headers: &hyper::HeaderMap) -> S3Result<()> {
        // Every operation passes here, so the session token is checked too.
        self.check_session_token(headers)?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase()
        };
        if headers.contains_key("x-amz-trailer")
            || header("x-amz-content-sha256").starts_with("streaming-")
            || header("content-encoding").contains("aws-chunked")
        {
            self.control.trailer_requests.fetch_add(1, Ordering::SeqCst);
            return Err(s3_error!(
                NotImplemented,
                "this server does not accept aws-chunked trailing checksums"
            ));
        }
        Ok(())
    }

    /// s3s has already checked the signature, which covers the token header.
    fn check_session_token(&self, headers: &hyper::HeaderMap) -> S3Result<()> {
        let token = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(token) = &token {
            self.control
                .session_tokens
                .lock()
                .unwrap()
                .push(token.clone());
        }
        let required = self.control.required_session_token.lock().unwrap().clone();
        if required.is_some() && token != required {
            return Err(s3_error!(AccessDenied, "missing or wrong session token"));
        }
        Ok(())
    }

    fn injected_failure(&self) -> S3Result<()> {
        let take = self
            .control
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            self.control.failures_sent.fetch_add(1, Ordering::SeqCst);
            return Err(s3_error!(SlowDown, "injected by the test"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl S3 for TestS3 {
    // Forwarded unchanged (after the trailer check).
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.create_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.get_bucket_location(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.delete_objects(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.copy_object(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.refuse_trailers(&req.headers)?;
        let i = &req.input;
        self.control.writes.lock().unwrap().push(WriteSeen {
            op: "CreateMultipartUpload",
            key: i.key.clone(),
            storage_class: i.storage_class.as_ref().map(|v| v.as_str().to_string()),
            sse: i
                .server_side_encryption
                .as_ref()
                .map(|v| v.as_str().to_string()),
            kms_key_id: i.ssekms_key_id.clone(),
            checksum_algorithm: i
                .checksum_algorithm
                .as_ref()
                .map(|v| v.as_str().to_string()),
        });
        self.fs.create_multipart_upload(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.list_parts(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.fs.abort_multipart_upload(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.injected_failure()?;
        let i = &req.input;
        self.control.writes.lock().unwrap().push(WriteSeen {
            op: "PutObject",
            key: i.key.clone(),
            storage_class: i.storage_class.as_ref().map(|v| v.as_str().to_string()),
            sse: i
                .server_side_encryption
                .as_ref()
                .map(|v| v.as_str().to_string()),
            kms_key_id: i.ssekms_key_id.clone(),
            checksum_algorithm: i
                .checksum_algorithm
                .as_ref()
                .map(|v| v.as_str().to_string()),
        });
        // s3s-fs checks x-amz-checksum-sha256 itself for whole objects.
        self.fs.put_object(req).await
    }

    async fn upload_part(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.refuse_trailers(&req.headers)?;
        self.injected_failure()?;
        let body = req
            .input
            .body
            .take()
            .ok_or_else(|| s3_error!(IncompleteBody))?;
        let chunks: Vec<Bytes> = body
            .try_collect()
            .await
            .map_err(|_| s3_error!(IncompleteBody, "the part's body was cut short"))?;
        let data: Bytes = chunks.concat().into();
        let actual = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data));
        if let Some(expected) = &req.input.checksum_sha256 {
            if *expected != actual {
                return Err(s3_error!(
                    BadDigest,
                    "x-amz-checksum-sha256 does not match the part"
                ));
            }
            self.control
                .parts_with_checksum
                .fetch_add(1, Ordering::SeqCst);
        }
        self.control
            .part_checksums
            .lock()
            .unwrap()
            .insert((req.input.upload_id.clone(), req.input.part_number), actual);
        self.control.parts_received.fetch_add(1, Ordering::SeqCst);
        let delay = self.control.part_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        req.input.body = Some(StreamingBlob::wrap(futures_util::stream::iter([Ok::<
            _,
            std::io::Error,
        >(
            data
        )])));
        self.fs.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.refuse_trailers(&req.headers)?;
        // Each listed part must name the checksum the part arrived with.
        let parts = req
            .input
            .multipart_upload
            .as_ref()
            .and_then(|m| m.parts.as_ref())
            .cloned()
            .unwrap_or_default();
        {
            let known = self.control.part_checksums.lock().unwrap();
            for part in &parts {
                let number = part.part_number.unwrap_or(0);
                let received = known.get(&(req.input.upload_id.clone(), number));
                if part.checksum_sha256.is_none() || part.checksum_sha256.as_ref() != received {
                    return Err(s3_error!(
                        InvalidPart,
                        "part {number}: the checksum does not match the uploaded part"
                    ));
                }
            }
        }
        self.fs.complete_multipart_upload(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.refuse_trailers(&req.headers)?;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads: Vec<MultipartUpload> = open_uploads(&self.root)
            .into_iter()
            .filter(|u| u.bucket == input.bucket && u.key.starts_with(&prefix))
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: u.initiated.map(Timestamp::from),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(false),
            uploads: (!uploads.is_empty()).then_some(uploads),
            ..Default::default()
        }))
    }
}

struct OpenUpload {
    bucket: String,
    key: String,
    upload_id: String,
    initiated: Option<std::time::SystemTime>,
}

/// Uploads s3s-fs still holds open: its `.upload-ID.json` marker exists; the
/// bucket and key come from `.bucket-B64.object-B64.upload-ID.metadata.json`.
fn open_uploads(root: &Path) -> Vec<OpenUpload> {
    let names: Vec<String> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let decode = |text: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let mut open = Vec::new();
    for name in &names {
        let Some(id) = name
            .strip_prefix(".upload-")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let suffix = format!(".upload-{id}.metadata.json");
        let located = names.iter().find_map(|n| {
            let rest = n.strip_prefix(".bucket-")?.strip_suffix(&suffix)?;
            let (bucket, key) = rest.split_once(".object-")?;
            Some((decode(bucket)?, decode(key)?))
        });
        let (bucket, key) =
            located.unwrap_or_else(|| (String::new(), format!("<unknown key of {id}>")));
        let initiated = std::fs::metadata(root.join(name))
            .and_then(|m| m.modified())
            .ok();
        open.push(OpenUpload {
            bucket,
            key,
            upload_id: id.to_string(),
            initiated,
        });
    }
    open.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
    open
}
