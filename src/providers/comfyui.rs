//! ComfyUI native API client (protocols.md §3; shapes checked against the recorded 0.3.64
//! session in `testdata/comfyui/recorded-0.3.64.json`).
//!
//! The client picks both ids: `prompt_id` (via [`ImageProvider::preassign_id`], persisted by the
//! engine before `submit`) and a fresh `client_id` per submission, stored in
//! [`Submission::data`] so that `wait` after a restart reconnects the WebSocket under the same
//! id. The socket only speeds things up: `/history/{prompt_id}` is polled every interval and on
//! connect, because events sent while nobody listened (before `wait`, across a restart) are lost.
//!
//! One provider may be a pool of servers (`base_urls`, [`super::comfy_pool`]): each job goes
//! to the healthy server with the fewest jobs in flight, and the server is stored in
//! [`Submission::data`] with the prompt id, so `wait`, `cancel` and `/view` after a restart go
//! to that server whatever the config order has become.

use super::comfy_pool::{DOWN_AFTER, PoolState};
use super::http::{self, HostResolver};
use super::{
    GenerateRequest, GeneratedFile, ImageProvider, InputImage, ProgressFn, ProviderError, ProviderProgress, Submission,
    VideoParams,
};
use crate::config::ProviderConfig;
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Bound on one API exchange (`/prompt` validates the whole graph, so be generous).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Consecutive transient poll failures tolerated inside one `wait`.
const MAX_POLL_FAILURES: u32 = 3;
/// Checks in a row that must find the prompt neither in history nor in the queue before it is
/// declared lost: a prompt that finishes between the two reads shows up in neither once.
const ABSENT_CHECKS_FOR_LOST: u32 = 2;
/// Bound on one health probe (`GET /system_stats`): a pick waits for it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A ComfyUI server (`kind = "comfyui"`). The model's workflow (API format, with
/// `{{placeholders}}`) comes in [`GenerateRequest::workflow`] (or, failing that, as JSON text
/// in `endpoint`).
///
/// - `preassign_id`: a UUID v4, used as `prompt_id`.
/// - `submit`: uploads input images (`POST /upload/image`, named `mediabot_<prompt_id>_<i>`),
///   fills the template ([`fill_template`] with [`TemplateVars::for_request`]),
///   `POST /prompt {prompt, client_id, prompt_id}`;
///   `data = {"client_id", "prompt"}` (the filled graph, for a resubmit). 400 → `Misconfigured`
///   ([`summarize_rejection`]): a workflow ComfyUI refuses is the operator's to fix.
/// - `wait`: WebSocket `/ws?clientId=` for progress and end signals, plus `/history/{id}`
///   every poll interval and at once. `/history` `{}` and absent from `/queue` twice means
///   ComfyUI restarted and forgot the prompt: it is posted again once, same `prompt_id` and
///   graph (the uploaded inputs stay on its disk); forgotten again → `Lost`.
/// - Results: every saved file of every output node, videos and animations first
///   ([`parse_history`]), each fetched with `GET /view` — pictures up to
///   [`http::MAX_DOWNLOAD_BYTES`], videos and animations up to [`http::MAX_VIDEO_BYTES`],
///   the cap enforced while streaming. A run-time failure (`execution_error`, e.g. libx264
///   refusing an odd height in SaveVideo) is `Failed("<node type>: <exception message>")`.
/// - `is_known`: a `/history` entry exists or `/queue` lists the id.
/// - `cancel`: `POST /queue {"delete": [id]}`, then `POST /interrupt {"prompt_id": id}`; a
///   prompt cancelled here is never resubmitted.
///
/// With several servers (`base_urls`): `submit` picks one ([`PoolState::pick`], probing down
/// or unknown servers that are due with `GET /system_stats` first) and tries the next when a
/// server fails before accepting the prompt; every request's outcome feeds the server's health
/// (transport errors and 5xx are failures). `data` also holds `"server"`: the server's URL
/// without credentials. A stored server that is no longer configured → `Lost`. A server that
/// goes down ([`DOWN_AFTER`] failed polls in a row) while a job waits on it →
/// [`ProviderError::ServerDown`]: the engine forgets that submission and submits the job
/// afresh (new prompt id), to a healthy server. Nothing up → `Transient`.
pub struct ComfyProvider {
    id: String,
    servers: Vec<ComfyServer>,
    pool: std::sync::Mutex<PoolState>,
    /// Held while due servers are probed: a concurrent pick waits for the outcome instead of
    /// finding every server "unknown" and giving up.
    probing: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    resolver: HostResolver,
    poll: Duration,
    /// Prompt ids this provider cancelled (the newest [`CANCELLED_KEPT`]).
    cancelled: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// Cancelled prompt ids remembered so that a wait still running never resubmits one.
const CANCELLED_KEPT: usize = 256;

/// One server of the provider.
struct ComfyServer {
    base_url: String,
    ws_url: String,
    /// `base_url` without credentials: stored in [`Submission::data`] and logged.
    key: String,
}

impl std::fmt::Debug for ComfyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComfyProvider")
            .field("id", &self.id)
            .field("servers", &self.servers.iter().map(|s| s.key.as_str()).collect::<Vec<_>>())
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

/// Stops counting a job in flight when its wait ends, however it ends (a result, an error,
/// or the engine dropping the wait at its timeout).
struct InFlight<'a> {
    pool: &'a std::sync::Mutex<PoolState>,
    prompt_id: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).untrack(self.prompt_id);
    }
}

impl ComfyProvider {
    /// Builds the client from `[[providers]]` config: `base_url` (`http://127.0.0.1:8188`, a
    /// path prefix behind a reverse proxy is kept) or `base_urls` (a pool, same form),
    /// `poll_interval_ms`. ComfyUI has no auth; a configured key is ignored.
    ///
    /// Errors: `Failed` for a server URL that is not an http(s) URL (the message names its
    /// position, not the URL: it may carry credentials).
    pub fn new(cfg: &ProviderConfig) -> Result<ComfyProvider, ProviderError> {
        let mut servers = Vec::new();
        for (i, base_url) in cfg.servers().into_iter().enumerate() {
            let bad = |m: String| ProviderError::Failed(format!("provider {}: bad server URL #{}: {m}", cfg.id, i + 1));
            let u = url::Url::parse(&base_url).map_err(|e| bad(e.to_string()))?;
            let ws_scheme = match u.scheme() {
                "http" => "ws",
                "https" => "wss",
                other => return Err(bad(format!("scheme {other} (want http or https)"))),
            };
            let ws_url = format!("{ws_scheme}{}/ws", &base_url[u.scheme().len()..]);
            servers.push(ComfyServer { key: crate::config::redacted_url(&base_url), base_url, ws_url });
        }
        Ok(ComfyProvider {
            id: cfg.id.clone(),
            http: http::client_for(cfg, Duration::from_secs(60))?,
            resolver: HostResolver::default(),
            pool: std::sync::Mutex::new(PoolState::new(servers.len())),
            probing: tokio::sync::Mutex::new(()),
            servers,
            poll: Duration::from_millis(cfg.poll_interval_ms.max(10)),
            cancelled: Default::default(),
        })
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The servers, without credentials, in config order (logs, tests).
    pub fn server_keys(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.key.clone()).collect()
    }

    /// Jobs in flight per server, in config order.
    #[cfg(test)]
    pub fn in_flight(&self) -> Vec<u32> {
        self.pool().in_flight()
    }

    /// Whether server `i` (config order) is up.
    #[cfg(test)]
    pub fn is_healthy(&self, i: usize) -> bool {
        self.pool().is_healthy(i)
    }

    /// Records the outcome of a request to server `srv`: transport errors and 5xx are
    /// failures, any other answer is a sign of life.
    fn note(&self, srv: usize, outcome: Result<u16, &ProviderError>) {
        let failed = match outcome {
            Ok(status) => status >= 500,
            Err(e) => matches!(e, ProviderError::Transient(_)),
        };
        if !failed {
            self.pool().succeeded(srv);
        } else if self.pool().failed(srv, std::time::Instant::now()) {
            tracing::warn!(provider = %self.id, server = %self.servers[srv].key, "ComfyUI server marked down");
        }
    }

    /// `GET /system_stats` on server `srv`: up when it answers 2xx with JSON naming `system`
    /// or `devices` (protocols.md §3.1).
    async fn probe(&self, srv: usize) -> bool {
        let url = format!("{}/system_stats", self.servers[srv].base_url);
        let Ok(resp) = self.http.get(url).timeout(PROBE_TIMEOUT).send().await else { return false };
        if !resp.status().is_success() {
            return false;
        }
        match http::read_limited(resp, 1024 * 1024).await {
            Ok(body) => serde_json::from_slice::<Value>(&body)
                .is_ok_and(|v| v.get("system").is_some() || v.get("devices").is_some()),
            Err(_) => false,
        }
    }

    /// Probes the servers that are due (concurrently), then picks the healthy one with the
    /// fewest jobs in flight, skipping `skip`, and counts `prompt_id` on it at once (under the
    /// same lock: concurrent submits see each other). `None`: nothing is up.
    async fn pick(&self, prompt_id: &str, skip: &[usize]) -> Option<usize> {
        let probing = self.probing.lock().await;
        let due = self.pool().take_due_probes(std::time::Instant::now());
        if !due.is_empty() {
            let results = futures_util::future::join_all(due.iter().map(|&i| self.probe(i))).await;
            let now = std::time::Instant::now();
            let mut pool = self.pool();
            for (&i, ok) in due.iter().zip(results) {
                let was = pool.is_healthy(i);
                pool.probed(i, ok, now);
                if ok != was {
                    let server = &self.servers[i].key;
                    if ok {
                        tracing::info!(provider = %self.id, %server, "ComfyUI server is up");
                    } else {
                        tracing::warn!(provider = %self.id, %server, "ComfyUI server is down");
                    }
                }
            }
        }
        drop(probing);
        let mut pool = self.pool();
        let srv = pool.pick(skip)?;
        pool.track(prompt_id, srv);
        Some(srv)
    }

    /// The server a stored submission belongs to: `data.server` looked up among the
    /// configured servers. A submission without one (made before pools, or restored by the
    /// engine from a bare prompt id after a crash) is looked for on every server; with one
    /// server that is the server.
    ///
    /// Errors: `Lost` when the stored server is no longer configured or no server knows the
    /// prompt; `Transient` when no server knows it and some could not be asked.
    async fn server_of(&self, sub: &Submission) -> Result<usize, ProviderError> {
        if let Some(key) = sub.data.get("server").and_then(Value::as_str) {
            return match self.servers.iter().position(|s| s.key == key) {
                Some(i) => Ok(i),
                None => {
                    tracing::warn!(provider = %self.id, server = %key, prompt_id = %sub.request_id,
                        "the job's ComfyUI server is no longer configured; the job is lost");
                    Err(ProviderError::Lost(format!("ComfyUI server {key} is no longer configured")))
                }
            };
        }
        if self.servers.len() == 1 {
            return Ok(0);
        }
        let mut unreachable = None;
        // A server known to be down cannot be asked; if it had the prompt, it lost it.
        let candidates: Vec<usize> = (0..self.servers.len()).filter(|&i| !self.pool().is_down(i)).collect();
        for i in candidates {
            match self.is_known_at(i, &sub.request_id).await {
                Ok(true) => return Ok(i),
                Ok(false) => {}
                Err(e) => unreachable = Some(e),
            }
        }
        Err(unreachable.unwrap_or_else(|| {
            ProviderError::Lost(format!("no ComfyUI server of {} knows prompt {}", self.id, sub.request_id))
        }))
    }

    /// Whether server `srv` has `request_id` in its history or queue.
    async fn is_known_at(&self, srv: usize, request_id: &str) -> Result<bool, ProviderError> {
        let h = self.get_json_at(srv, &format!("/history/{request_id}")).await?;
        // Any history entry counts, even one whose outputs we could not use.
        if h.get(request_id).is_some() {
            return Ok(true);
        }
        let q = self.get_json_at(srv, "/queue").await?;
        Ok(queue_state(&q, request_id) != QueueState::Absent)
    }

    /// Uploads the inputs and posts the prompt to server `srv`.
    async fn submit_to(
        &self,
        srv: usize,
        req: &GenerateRequest,
        workflow: &Value,
        prompt_id: &str,
    ) -> Result<Submission, ProviderError> {
        let mut inputs = Vec::with_capacity(req.input_images.len());
        for (i, img) in req.input_images.iter().enumerate() {
            // Named after the prompt: a retried submit overwrites instead of piling up files.
            inputs.push(self.upload(srv, img, &format!("mediabot_{prompt_id}_{i}")).await?);
        }
        let graph = fill_template(workflow, &TemplateVars::for_request(req, &inputs));
        let client_id = uuid::Uuid::new_v4().to_string();
        let accepted = self.post_prompt(srv, &graph, &client_id, prompt_id).await?;
        Ok(Submission {
            request_id: accepted,
            data: json!({"client_id": client_id, "prompt": graph, "server": self.servers[srv].key}),
        })
    }

    /// `POST /prompt`; returns the id ComfyUI accepted. 400 → `Misconfigured`: ComfyUI
    /// validates the graph (node classes, links, input values and ranges, output nodes), and
    /// the graph is the operator's workflow; the user's text only fills string inputs, which
    /// validation does not judge.
    async fn post_prompt(
        &self,
        srv: usize,
        graph: &Value,
        client_id: &str,
        prompt_id: &str,
    ) -> Result<String, ProviderError> {
        let body = json!({"prompt": graph, "client_id": client_id, "prompt_id": prompt_id});
        let url = format!("{}/prompt", self.servers[srv].base_url);
        let (status, resp) = self.send_at(srv, self.http.post(url).json(&body)).await?;
        let text = String::from_utf8_lossy(&resp);
        if status == 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let summary = summarize_rejection(&v).unwrap_or_else(|| http::error_detail(&text));
            return Err(ProviderError::Misconfigured(summary));
        }
        if !(200..300).contains(&status) {
            return Err(http::status_error(status, &text));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ProviderError::Failed(format!("malformed response (/prompt): {e}")))?;
        let accepted = v.get("prompt_id").and_then(Value::as_str).unwrap_or(prompt_id).to_string();
        if accepted != prompt_id {
            tracing::warn!(provider = %self.id, %prompt_id, %accepted, "ComfyUI ignored our prompt_id");
        }
        if v.get("node_errors").and_then(Value::as_object).is_some_and(|o| !o.is_empty()) {
            tracing::warn!(provider = %self.id, node_errors = %v["node_errors"], "ComfyUI dropped some outputs");
        }
        Ok(accepted)
    }

    /// Posts a forgotten prompt again (same id, client id and graph), unless it has no stored
    /// graph or was cancelled here. Returns whether it was posted.
    async fn resubmit(&self, srv: usize, sub: &Submission, client_id: &str) -> Result<bool, ProviderError> {
        let Some(graph) = sub.data.get("prompt").filter(|g| g.is_object()) else { return Ok(false) };
        let prompt_id = sub.request_id.as_str();
        if self.cancelled.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|c| c == prompt_id) {
            return Ok(false);
        }
        self.post_prompt(srv, graph, client_id, prompt_id).await?;
        tracing::warn!(provider = %self.id, %prompt_id, "ComfyUI had forgotten the prompt (restarted?); submitted it again");
        Ok(true)
    }

    /// One exchange with the first server (ComfyUI-Connect has one).
    pub(crate) async fn send(&self, rb: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), ProviderError> {
        self.send_at(0, rb).await
    }

    /// One exchange with server `srv`; its outcome feeds the server's health.
    pub(crate) async fn send_at(
        &self,
        srv: usize,
        rb: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), ProviderError> {
        let out = async {
            let resp = rb.timeout(REQUEST_TIMEOUT).send().await.map_err(|e| http::classify(&e))?;
            let status = resp.status().as_u16();
            let body = http::read_limited(resp, 2 * http::MAX_DOWNLOAD_BYTES).await?;
            Ok((status, body))
        }
        .await;
        self.note(srv, out.as_ref().map(|(status, _)| *status));
        out
    }

    /// `GET /object_info` on server `srv` (config order): every node class the server has,
    /// with its inputs (for [`object_info_mismatches`]).
    ///
    /// Errors: `Transient` when the server is unreachable, the status classes of
    /// [`ProviderError::from_status`], `Failed` for a body that is not JSON.
    pub async fn object_info(&self, srv: usize) -> Result<Value, ProviderError> {
        self.get_json_at(srv, "/object_info").await
    }

    /// `GET {base_url}{path}` as JSON on the first server (ComfyUI-Connect has one). Errors as
    /// [`Self::object_info`].
    pub(crate) async fn get_json(&self, path: &str) -> Result<Value, ProviderError> {
        self.get_json_at(0, path).await
    }

    /// `GET {base_url}{path}` as JSON on server `srv`. Errors as [`Self::object_info`].
    pub(crate) async fn get_json_at(&self, srv: usize, path: &str) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.servers[srv].base_url);
        let (status, body) = self.send_at(srv, self.http.get(url)).await?;
        if !(200..300).contains(&status) {
            return Err(http::status_error(status, &String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| ProviderError::Failed(format!("malformed response ({path}): {e}")))
    }

    /// `POST {base_url}{path}` with a JSON body, expecting 2xx. Errors per
    /// [`ProviderError::from_status`]; `Transient` when unreachable.
    pub(crate) async fn post_ok(&self, path: &str, body: &Value) -> Result<(), ProviderError> {
        self.post_ok_at(0, path, body).await
    }

    /// `POST {base_url}{path}` on server `srv`; as [`Self::post_ok`].
    pub(crate) async fn post_ok_at(&self, srv: usize, path: &str, body: &Value) -> Result<(), ProviderError> {
        let url = format!("{}{path}", self.servers[srv].base_url);
        let (status, resp) = self.send_at(srv, self.http.post(url).json(body)).await?;
        if !(200..300).contains(&status) {
            return Err(http::status_error(status, &String::from_utf8_lossy(&resp)));
        }
        Ok(())
    }

    /// `POST /upload/image` (multipart `image` + `overwrite=true`); returns the name to put in
    /// `LoadImage.inputs.image` (`subfolder/name` when a subfolder is returned).
    async fn upload(&self, srv: usize, img: &InputImage, stem: &str) -> Result<String, ProviderError> {
        let ext = match img.mime.as_str() {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/webp" => "webp",
            "image/gif" => "gif",
            _ => "bin",
        };
        let part = reqwest::multipart::Part::bytes(img.bytes.clone())
            .file_name(format!("{stem}.{ext}"))
            .mime_str(&img.mime)
            .map_err(|e| ProviderError::Rejected(format!("bad input image type {}: {e}", img.mime)))?;
        let form = reqwest::multipart::Form::new().part("image", part).text("overwrite", "true");
        let url = format!("{}/upload/image", self.servers[srv].base_url);
        let (status, body) = self.send_at(srv, self.http.post(url).multipart(form)).await?;
        if !(200..300).contains(&status) {
            return Err(http::status_error(status, &String::from_utf8_lossy(&body)));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Failed(format!("malformed response (/upload/image): {e}")))?;
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Failed("malformed response (/upload/image): no name".into()))?;
        Ok(match v.get("subfolder").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            Some(sub) => format!("{sub}/{name}"),
            None => name.to_string(),
        })
    }

    async fn connect_ws(&self, srv: usize, client_id: &str) -> Result<WsStream, String> {
        let mut u = url::Url::parse(&self.servers[srv].ws_url).map_err(|e| e.to_string())?;
        u.query_pairs_mut().append_pair("clientId", client_id);
        let host = u.host_str().ok_or("no host")?.to_string();
        let port = u.port_or_known_default().ok_or("no port")?;
        let connect = async {
            // Resolve with hickory, not through tokio's getaddrinfo (NSS trap, build-notes.md).
            let addrs = self.resolver.lookup(&host, port).await.map_err(|e| e.to_string())?;
            let tcp = tokio::net::TcpStream::connect(&addrs[..]).await.map_err(|e| e.to_string())?;
            let (ws, _) = tokio_tungstenite::client_async_tls(u.as_str(), tcp).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(ws)
        };
        tokio::time::timeout(http::CONNECT_TIMEOUT, connect).await.map_err(|_| "timed out".to_string())?
    }

    /// One look at `/history/{id}` (and `/queue` while unfinished). `Ok(Some)` = done.
    async fn check(
        &self,
        srv: usize,
        prompt_id: &str,
        absent: &mut u32,
        progress: ProgressFn<'_>,
    ) -> Result<Option<Vec<GeneratedFile>>, ProviderError> {
        let h = self.get_json_at(srv, &format!("/history/{prompt_id}")).await?;
        match parse_history(&h, prompt_id)? {
            History::Success(files) => {
                let mut out = Vec::with_capacity(files.len());
                for f in &files {
                    out.push(self.view_at(srv, f).await?);
                }
                Ok(Some(out))
            }
            History::Error(msg) => Err(ProviderError::Failed(msg)),
            History::Pending => {
                let q = self.get_json_at(srv, "/queue").await?;
                match queue_state(&q, prompt_id) {
                    QueueState::Running => {
                        *absent = 0;
                        progress(ProviderProgress { running: true, ..Default::default() });
                    }
                    QueueState::Pending(pos) => {
                        *absent = 0;
                        progress(ProviderProgress { queue_position: Some(pos), ..Default::default() });
                    }
                    QueueState::Absent => {
                        *absent += 1;
                        if *absent >= ABSENT_CHECKS_FOR_LOST {
                            return Err(ProviderError::Lost(format!(
                                "ComfyUI has prompt {prompt_id} neither in history nor in the queue"
                            )));
                        }
                    }
                }
                Ok(None)
            }
        }
    }

    /// `GET /view?filename=&subfolder=&type=` → the file, capped while streaming at
    /// [`http::MAX_VIDEO_BYTES`] for a video or animation ([`OutputFile::is_video`]), else
    /// [`http::MAX_DOWNLOAD_BYTES`].
    ///
    /// Errors: `Failed` for a missing file (404) or one over the cap; `Transient` for network
    /// failures; other statuses per [`ProviderError::from_status`].
    pub(crate) async fn view(&self, f: &OutputFile) -> Result<GeneratedFile, ProviderError> {
        self.view_at(0, f).await
    }

    /// [`Self::view`] on server `srv`.
    pub(crate) async fn view_at(&self, srv: usize, f: &OutputFile) -> Result<GeneratedFile, ProviderError> {
        let (cap, timeout) = if f.is_video() {
            (http::MAX_VIDEO_BYTES, http::VIDEO_DOWNLOAD_TIMEOUT)
        } else {
            (http::MAX_DOWNLOAD_BYTES, http::DOWNLOAD_TIMEOUT)
        };
        let rb = self
            .http
            .get(format!("{}/view", self.servers[srv].base_url))
            .query(&[("filename", &f.filename), ("subfolder", &f.subfolder), ("type", &f.kind)])
            .timeout(timeout);
        let sent = rb.send().await.map_err(|e| http::classify(&e));
        self.note(srv, sent.as_ref().map(|r| r.status().as_u16()));
        let resp = sent?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            // A file named by history but missing on disk will not appear later.
            return Err(match status {
                404 => ProviderError::Failed(format!("ComfyUI output {} is missing", f.filename)),
                _ => http::status_error(status, &body),
            });
        }
        let header =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = http::read_limited(resp, cap).await?;
        let sniffed = super::sniff_mime(&bytes);
        let mime = if sniffed != "application/octet-stream" {
            sniffed.to_string()
        } else {
            f.format.clone().or(header).unwrap_or_else(|| sniffed.to_string())
        };
        Ok(GeneratedFile { bytes, mime, is_demo: false })
    }
}

/// Waits for the next text frame; never resolves when there is no socket, so a `select!` on it
/// leaves polling alone. `None` = the socket is gone.
async fn next_text(ws: &mut Option<WsStream>) -> Option<String> {
    let Some(s) = ws.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match s.next().await {
            Some(Ok(Message::Text(t))) => return Some(t.to_string()),
            // Binary frames are live previews; pings are answered by tungstenite.
            Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
        }
    }
}

enum Wake {
    Tick,
    Ws(Option<String>),
}

#[async_trait::async_trait]
impl ImageProvider for ComfyProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn preassign_id(&self) -> Option<String> {
        Some(uuid::Uuid::new_v4().to_string())
    }

    async fn submit(&self, req: &GenerateRequest, preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        let prompt_id = preassigned.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let workflow = req
            .workflow
            .clone()
            .or_else(|| serde_json::from_str::<Value>(&req.endpoint).ok())
            .filter(Value::is_object)
            .ok_or_else(|| ProviderError::Failed(format!("model {}: no ComfyUI workflow", req.model_id)))?;
        // A server that fails before accepting the prompt is skipped for this submit: the
        // next one gets it (same prompt id: at most one of them ever ran it, and only the one
        // stored is polled).
        let mut tried = Vec::new();
        let mut last = None;
        while let Some(srv) = self.pick(&prompt_id, &tried).await {
            let out = self.submit_to(srv, req, &workflow, &prompt_id).await;
            match &out {
                Ok(sub) if sub.request_id == prompt_id => {}
                // Counted under the id ComfyUI answered (the one `wait` gets), or not at all.
                Ok(sub) => {
                    let mut pool = self.pool();
                    pool.untrack(&prompt_id);
                    pool.track(&sub.request_id, srv);
                }
                Err(_) => self.pool().untrack(&prompt_id),
            }
            match out {
                Ok(sub) => {
                    let in_flight = self.pool().in_flight();
                    tracing::info!(provider = %self.id, server = %self.servers[srv].key, %prompt_id, ?in_flight,
                        "ComfyUI server chosen");
                    return Ok(sub);
                }
                Err(e @ ProviderError::Transient(_)) if self.servers.len() > 1 => {
                    tracing::warn!(provider = %self.id, server = %self.servers[srv].key, "submit failed, trying another server: {e}");
                    tried.push(srv);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            ProviderError::Transient(format!(
                "no ComfyUI server of {} is up ({} configured)",
                self.id,
                self.servers.len()
            ))
        }))
    }

    async fn is_known(&self, request_id: &str, data: &Value) -> Result<bool, ProviderError> {
        let sub = Submission { request_id: request_id.to_string(), data: data.clone() };
        match self.server_of(&sub).await {
            Ok(srv) => self.is_known_at(srv, request_id).await,
            Err(ProviderError::Lost(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn wait(&self, sub: &Submission, progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        let prompt_id = sub.request_id.as_str();
        let srv = self.server_of(sub).await?;
        self.pool().track(prompt_id, srv);
        let _in_flight = InFlight { pool: &self.pool, prompt_id };
        let client_id = match sub.data.get("client_id").and_then(Value::as_str) {
            Some(c) => c.to_string(),
            // No stored client id: events would never reach us, polling alone still works.
            None => uuid::Uuid::new_v4().to_string(),
        };
        let mut ws = match self.connect_ws(srv, &client_id).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::info!(provider = %self.id, "ComfyUI WebSocket unavailable, polling /history only: {e}");
                None
            }
        };
        // Queue polls say "running" without a fraction; repeat the last socket fraction so the
        // shown progress does not jump back.
        let last_fraction = std::sync::Mutex::new(None::<f32>);
        let report = |mut p: ProviderProgress| {
            let mut last = last_fraction.lock().unwrap_or_else(|e| e.into_inner());
            if p.fraction.is_some() {
                *last = p.fraction;
            } else if p.running {
                p.fraction = *last;
            }
            drop(last);
            progress(p);
        };
        // The first tick fires at once: the prompt may have finished before we connected.
        let mut ticker = tokio::time::interval(self.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut absent, mut failures, mut resubmitted) = (0u32, 0u32, false);
        loop {
            let wake = tokio::select! {
                _ = ticker.tick() => Wake::Tick,
                m = next_text(&mut ws) => Wake::Ws(m),
            };
            match wake {
                Wake::Ws(None) => {
                    tracing::debug!(provider = %self.id, "ComfyUI WebSocket closed, polling only");
                    ws = None;
                    continue;
                }
                Wake::Ws(Some(text)) => match parse_ws_event(&text, prompt_id) {
                    WsEvent::Started => report(ProviderProgress { running: true, ..Default::default() }),
                    WsEvent::Progress { value, max } if max > 0.0 => report(ProviderProgress {
                        fraction: Some((value / max).clamp(0.0, 1.0) as f32),
                        running: true,
                        ..Default::default()
                    }),
                    WsEvent::Error(m) => return Err(ProviderError::Failed(m)),
                    WsEvent::Interrupted => {
                        return Err(ProviderError::Failed("execution interrupted".into()));
                    }
                    // Finished: read history now instead of at the next tick.
                    WsEvent::Done => {}
                    WsEvent::Progress { .. } | WsEvent::Other => continue,
                },
                Wake::Tick => {}
            }
            match self.check(srv, prompt_id, &mut absent, &report).await {
                Ok(Some(images)) => {
                    // History can say "done" before the socket's last progress frame was read.
                    report(ProviderProgress { fraction: Some(1.0), running: true, ..Default::default() });
                    return Ok(images);
                }
                Ok(None) => failures = 0,
                // The job's server went down under it: whatever it had is gone or unreachable,
                // and another server can run the job (the engine submits it afresh).
                Err(ProviderError::Transient(m))
                    if self.servers.len() > 1 && failures + 1 >= DOWN_AFTER && !self.pool().is_healthy(srv) =>
                {
                    tracing::warn!(provider = %self.id, server = %self.servers[srv].key, %prompt_id,
                        "the job's ComfyUI server is down; the job goes to another server");
                    return Err(ProviderError::ServerDown(format!(
                        "ComfyUI server {} stopped answering: {m}",
                        self.servers[srv].key
                    )));
                }
                Err(ProviderError::Transient(m)) if failures < MAX_POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!(provider = %self.id, attempt = failures, "ComfyUI poll failed: {m}");
                }
                // Confirmed absent (history and queue, twice): nothing of it runs, so posting
                // it again cannot run it twice.
                Err(ProviderError::Lost(m)) if !resubmitted => match self.resubmit(srv, sub, &client_id).await {
                    Ok(true) => {
                        (resubmitted, absent) = (true, 0);
                        if ws.is_none() {
                            ws = self.connect_ws(srv, &client_id).await.ok();
                        }
                    }
                    Ok(false) => return Err(ProviderError::Lost(m)),
                    Err(e @ (ProviderError::Transient(_) | ProviderError::RateLimited { .. })) => return Err(e),
                    Err(e) => return Err(ProviderError::Lost(format!("{m}; submitting it again failed: {e}"))),
                },
                Err(e) => return Err(e),
            }
        }
    }

    async fn cancel(&self, sub: &Submission) -> Result<(), ProviderError> {
        let id = &sub.request_id;
        {
            let mut cancelled = self.cancelled.lock().unwrap_or_else(|e| e.into_inner());
            if cancelled.len() >= CANCELLED_KEPT {
                cancelled.pop_front();
            }
            cancelled.push_back(id.clone());
        }
        self.pool().untrack(id);
        // A bare id (a timed-out submit) may have reached any server: ask each to drop it.
        let targets: Vec<usize> = match sub.data.get("server") {
            Some(_) => vec![self.server_of(sub).await?],
            None => (0..self.servers.len()).collect(),
        };
        let mut result = Ok(());
        for srv in targets {
            // Delete only removes pending items; interrupt with our id only stops it if running.
            let out = match self.post_ok_at(srv, "/queue", &json!({"delete": [id]})).await {
                Ok(()) => self.post_ok_at(srv, "/interrupt", &json!({"prompt_id": id})).await,
                Err(e) => Err(e),
            };
            if out.is_err() {
                result = out;
            }
        }
        result
    }
}

/// Values for the workflow placeholders.
#[derive(Debug, Clone)]
pub struct TemplateVars<'a> {
    pub prompt: &'a str,
    /// Empty when the user gave none.
    pub negative: &'a str,
    /// Pixels; even for video requests.
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// Uploaded input names: `{{input_image}}` is the first, `{{input_image_2}}` the second…
    pub input_images: &'a [String],
    /// `{{duration}}`: clip length, whole seconds.
    pub duration: u32,
    /// `{{frames}}`: frames in the clip, duration × fps.
    pub frames: u32,
    /// `{{fps}}`: frames per second.
    pub fps: u32,
}

/// Placeholder names [`TemplateVars`] fills, besides `input_image_N` (N ≥ 1).
const PLACEHOLDERS: [&str; 9] =
    ["prompt", "negative", "width", "height", "seed", "input_image", "duration", "frames", "fps"];

impl<'a> TemplateVars<'a> {
    /// The values for `req` with the uploaded input names. `{{duration}}`, `{{frames}}` and
    /// `{{fps}}` come from [`GenerateRequest::video`]; a request without it (a model of
    /// another task using a video workflow) gets the defaults, 5 s at 16 fps = 80 frames
    /// ([`super::DEFAULT_DURATION_SECS`], [`super::DEFAULT_FPS`]). For video requests
    /// `{{width}}` and `{{height}}` are rounded down to even numbers ([`super::even`]):
    /// SaveVideo's libx264 fails an odd size at run time, after the prompt was accepted.
    pub fn for_request(req: &'a GenerateRequest, input_images: &'a [String]) -> TemplateVars<'a> {
        let video =
            req.video.unwrap_or(VideoParams { duration_secs: super::DEFAULT_DURATION_SECS, fps: super::DEFAULT_FPS });
        let (width, height) = if req.video.is_some() || req.task.is_video() {
            (super::even(req.width), super::even(req.height))
        } else {
            (req.width, req.height)
        };
        TemplateVars {
            prompt: &req.prompt,
            negative: req.negative.as_deref().unwrap_or(""),
            width,
            height,
            seed: req.seed,
            input_images,
            duration: video.duration_secs,
            frames: video.frames(),
            fps: video.fps,
        }
    }
}

impl TemplateVars<'_> {
    /// Whether `name` (without braces) is a placeholder this client fills.
    fn knows(name: &str) -> bool {
        PLACEHOLDERS.contains(&name)
            || name.strip_prefix("input_image_").and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n >= 1)
    }

    /// The value of placeholder `name` (without braces; numbers stay numbers); `None` for an
    /// unknown name or an input image that was not uploaded.
    fn value(&self, name: &str) -> Option<Value> {
        Some(match name {
            "prompt" => json!(self.prompt),
            "negative" => json!(self.negative),
            "width" => json!(self.width),
            "height" => json!(self.height),
            "seed" => json!(self.seed),
            "duration" => json!(self.duration),
            "frames" => json!(self.frames),
            "fps" => json!(self.fps),
            "input_image" => json!(self.input_images.first()?),
            _ => {
                let n: usize = name.strip_prefix("input_image_")?.parse().ok()?;
                json!(self.input_images.get(n.checked_sub(1)?)?)
            }
        })
    }

    /// The value a whole-string placeholder becomes.
    fn exact(&self, s: &str) -> Option<Value> {
        self.value(s.strip_prefix("{{")?.strip_suffix("}}")?)
    }

    /// Fills placeholders inside a longer string in one pass over the template: a value is
    /// copied as is and never scanned again, so `{{seed}}` typed in a prompt stays text.
    fn substitute(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let filled = after.find("}}").and_then(|close| Some((close, self.value(&after[..close])?)));
            match filled {
                Some((close, v)) => {
                    match v {
                        Value::String(text) => out.push_str(&text),
                        other => out.push_str(&other.to_string()),
                    }
                    rest = &after[close + 2..];
                }
                None => {
                    out.push_str("{{");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Fills a workflow template: a JSON string value exactly equal to `"{{prompt}}"`,
/// `"{{negative}}"`, `"{{width}}"`, `"{{height}}"`, `"{{seed}}"`, `"{{duration}}"`,
/// `"{{frames}}"`, `"{{fps}}"`, `"{{input_image}}"` (`"{{input_image_N}}"`, 1-based) is
/// replaced by the value (numbers as JSON numbers);
/// placeholders inside longer strings are substituted as text. Object keys are left alone, and
/// so is an input placeholder without an uploaded image (ComfyUI then rejects the prompt).
pub fn fill_template(v: &Value, vars: &TemplateVars<'_>) -> Value {
    match v {
        Value::String(s) if s.contains("{{") => vars.exact(s).unwrap_or_else(|| Value::String(vars.substitute(s))),
        Value::Array(a) => Value::Array(a.iter().map(|x| fill_template(x, vars)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, x)| (k.clone(), fill_template(x, vars))).collect::<Map<_, _>>())
        }
        other => other.clone(),
    }
}

/// The nodes of an API-format workflow in id order (numeric ids numerically).
fn nodes_in_order(workflow: &Value) -> Vec<(&String, &Value)> {
    let mut nodes: Vec<(&String, &Value)> = workflow.as_object().map(|o| o.iter().collect()).unwrap_or_default();
    nodes.sort_by_key(|(id, _)| (id.parse::<u64>().unwrap_or(u64::MAX), id.to_string()));
    nodes
}

/// `node 2 (ImageScaleBy)`, as problems and ComfyUI's errors name a node.
fn node_name(id: &str, node: &Value) -> String {
    match node.get("class_type").and_then(Value::as_str) {
        Some(class) => format!("node {id} ({class})"),
        None => format!("node {id}"),
    }
}

/// Placeholders of a workflow template that this client does not fill (`{{name}}` in any
/// string value; keys are never filled): one problem per use, naming the node, the input
/// and the placeholder, e.g. `node 5 (RepeatImageBatch) input amount: unknown placeholder
/// {{frames}}`. Empty when every placeholder is known ([`TemplateVars`]; `check-config`).
pub fn unknown_placeholders(workflow: &Value) -> Vec<String> {
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    for (id, node) in nodes_in_order(workflow) {
        let inputs = node.get("inputs").and_then(Value::as_object).into_iter().flatten();
        for (input, value) in inputs {
            let mut texts = Vec::new();
            strings(value, &mut texts);
            for text in texts {
                let mut rest = text;
                while let Some(open) = rest.find("{{") {
                    let after = &rest[open + 2..];
                    let Some(close) = after.find("}}") else { break };
                    let name = &after[..close];
                    // Scanned like `TemplateVars::substitute`: a `{{` that opens nothing is text.
                    if name.contains('{') {
                        rest = after;
                        continue;
                    }
                    if !TemplateVars::knows(name) {
                        problems.push(format!(
                            "{} input {input}: unknown placeholder {{{{{name}}}}} (known: {}, input_image_N)",
                            node_name(id, node),
                            PLACEHOLDERS.join(", ")
                        ));
                    }
                    rest = &after[close + 2..];
                }
            }
        }
    }
    problems
}

/// Mismatches between a workflow and what a ComfyUI server offers (`GET /object_info`:
/// `{"<Class>": {"input": {"required": {..}, "optional": {..}, "hidden": {..}}, ..}}`,
/// protocols.md §3.1): a node without `class_type`, a class the server does not have, an
/// input name the class does not take, a required input that is missing. One problem per
/// finding, naming the node (`check-config --online`).
pub fn object_info_mismatches(workflow: &Value, object_info: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, node) in nodes_in_order(workflow) {
        let Some(class) = node.get("class_type").and_then(Value::as_str) else {
            problems.push(format!("node {id}: no class_type"));
            continue;
        };
        let Some(spec) = object_info.get(class) else {
            problems.push(format!("node {id}: unknown class_type {class} (not on this server)"));
            continue;
        };
        let group = |g: &str| spec.get("input").and_then(|i| i.get(g)).and_then(Value::as_object);
        let takes = |name: &str| {
            ["required", "optional", "hidden"].iter().any(|g| group(g).is_some_and(|m| m.contains_key(name)))
        };
        let given = node.get("inputs").and_then(Value::as_object);
        for name in given.into_iter().flat_map(|m| m.keys()) {
            if !takes(name) {
                problems.push(format!("node {id} ({class}): unknown input {name}"));
            }
        }
        for name in group("required").into_iter().flat_map(|m| m.keys()) {
            if !given.is_some_and(|m| m.contains_key(name)) {
                problems.push(format!("node {id} ({class}): required input {name} is missing"));
            }
        }
    }
    problems
}

/// A readable one-line summary of a `POST /prompt` 400 answer
/// (`{"error": {type, message, details}, "node_errors": {id: {errors: [..], class_type}}}`,
/// §3.1), e.g. `Prompt outputs failed validation: node 2 (ImageScaleBy): Value 100.0 bigger
/// than max of 8.0 [scale_by]`. `None` if the body has neither part.
pub fn summarize_rejection(v: &Value) -> Option<String> {
    let err = v.get("error");
    let mut out = match err {
        Some(Value::String(s)) => s.clone(),
        Some(e) => {
            let msg = e.get("message").and_then(Value::as_str).unwrap_or("invalid prompt").to_string();
            match e.get("details").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                Some(d) => format!("{msg} ({d})"),
                None => msg,
            }
        }
        None => String::new(),
    };
    for (id, ne) in nodes_in_order(v.get("node_errors").unwrap_or(&Value::Null)) {
        let class = ne.get("class_type").and_then(Value::as_str).unwrap_or("?");
        let errs: Vec<String> = ne
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| {
                let m = e.get("message").and_then(Value::as_str).unwrap_or("error");
                match e.get("details").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                    Some(d) => format!("{m} [{d}]"),
                    None => m.to_string(),
                }
            })
            .collect();
        out.push_str(&format!("; node {id} ({class}): {}", errs.join(", ")));
    }
    let out = out.trim_start_matches("; ").to_string();
    if out.is_empty() { None } else { Some(out.chars().take(600).collect()) }
}

/// One saved output file named by history.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    pub filename: String,
    pub subfolder: String,
    /// `output` (saved files), or `temp` for VideoHelperSuite `gifs` of a workflow that saved
    /// nothing else (`save_output: false`); `temp` pictures (PreviewImage) are skipped.
    pub kind: String,
    /// VideoHelperSuite `gifs[].format` (a MIME type), if given.
    pub format: Option<String>,
    /// A video or animation: the node reported `animated: [true]` (SaveVideo, SaveWEBM,
    /// SaveAnimatedWEBP, SaveAnimatedPNG) or the file came under `gifs` (VHS_VideoCombine).
    pub animated: bool,
}

impl OutputFile {
    /// Downloaded with the video cap: animated, or a video container by its extension.
    pub fn is_video(&self) -> bool {
        const VIDEO: [&str; 6] = ["mp4", "webm", "mov", "mkv", "gif", "avi"];
        let ext = self.filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        self.animated || VIDEO.contains(&ext.as_str())
    }
}

/// What `/history/{id}` says about a prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum History {
    /// `{}`: queued, running, or unknown (ask `/queue`).
    Pending,
    /// `status_str: success`: the saved files, in node-id order.
    Success(Vec<OutputFile>),
    /// `status_str: error`: the exception message (or "execution interrupted").
    Error(String),
}

/// Parses a `/history/{id}` answer (§3.1). Outputs are every node's `images` and VHS `gifs`
/// entries with `type: output` (`type: temp` gifs when nothing was saved), in node-id order
/// with videos and animations ([`OutputFile::animated`]) before pictures: the first file is
/// the one the job keeps, and a video workflow may also save a still frame.
///
/// Errors: `Failed("malformed response …")` when the body is not an object or the entry has no
/// status; `Failed` when a successful run saved no files (e.g. SaveImageWebsocket only).
pub fn parse_history(v: &Value, prompt_id: &str) -> Result<History, ProviderError> {
    let malformed = |m: &str| ProviderError::Failed(format!("malformed response (/history): {m}"));
    let obj = v.as_object().ok_or_else(|| malformed("not an object"))?;
    let Some(entry) = obj.get(prompt_id) else {
        return Ok(History::Pending);
    };
    let status = entry.get("status").and_then(|s| s.get("status_str")).and_then(Value::as_str);
    match status {
        Some("success") => {}
        Some("error") => return Ok(History::Error(history_error(entry))),
        _ => return Err(malformed("entry without status")),
    }
    let mut nodes: Vec<(&String, &Value)> =
        entry.get("outputs").and_then(Value::as_object).map(|o| o.iter().collect()).unwrap_or_default();
    nodes.sort_by_key(|(id, _)| (id.parse::<u64>().unwrap_or(u64::MAX), id.to_string()));
    let mut files = Vec::new();
    let mut temp_gifs = Vec::new();
    for (_, out) in nodes {
        let animated = out.get("animated").and_then(Value::as_array).is_some_and(|a| a.contains(&Value::Bool(true)));
        for key in ["images", "gifs"] {
            for f in out.get(key).and_then(Value::as_array).into_iter().flatten() {
                let s = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_string);
                let (Some(filename), Some(kind)) = (s("filename"), s("type")) else {
                    continue;
                };
                let file = OutputFile {
                    filename,
                    subfolder: s("subfolder").unwrap_or_default(),
                    kind,
                    format: s("format"),
                    animated: animated || key == "gifs",
                };
                match (file.kind.as_str(), key) {
                    ("output", _) => files.push(file),
                    ("temp", "gifs") => temp_gifs.push(file),
                    _ => {}
                }
            }
        }
    }
    if files.is_empty() {
        files = temp_gifs;
    }
    // Stable: node order is kept within each group.
    files.sort_by_key(|f| !f.animated);
    if files.is_empty() {
        return Err(ProviderError::Failed("the workflow saved no output images (needs a SaveImage node)".into()));
    }
    Ok(History::Success(files))
}

fn history_error(entry: &Value) -> String {
    let messages = entry.get("status").and_then(|s| s.get("messages")).and_then(Value::as_array);
    for m in messages.into_iter().flatten() {
        let (Some(kind), Some(data)) = (m.get(0).and_then(Value::as_str), m.get(1)) else {
            continue;
        };
        match kind {
            "execution_error" => return execution_error_text(data),
            "execution_interrupted" => return "execution interrupted".into(),
            _ => {}
        }
    }
    "execution failed".into()
}

fn execution_error_text(data: &Value) -> String {
    let msg = data.get("exception_message").and_then(Value::as_str).unwrap_or("execution failed").trim();
    match data.get("node_type").and_then(Value::as_str) {
        Some(node) => format!("{node}: {msg}"),
        None => msg.to_string(),
    }
}

/// Where `/queue` has a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    Running,
    /// 0-based position among pending prompts (by queue number).
    Pending(u32),
    Absent,
}

/// Reads `{"queue_running": [[number, prompt_id, …]], "queue_pending": [...]}` (§3.1).
pub fn queue_state(v: &Value, prompt_id: &str) -> QueueState {
    let items = |k: &str| v.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let id_of = |item: &Value| item.get(1).and_then(Value::as_str).map(str::to_string);
    if items("queue_running").iter().any(|i| id_of(i).as_deref() == Some(prompt_id)) {
        return QueueState::Running;
    }
    let mut pending = items("queue_pending");
    pending.sort_by(|a, b| {
        let n = |i: &Value| i.get(0).and_then(Value::as_f64).unwrap_or(f64::MAX);
        n(a).total_cmp(&n(b))
    });
    match pending.iter().position(|i| id_of(i).as_deref() == Some(prompt_id)) {
        Some(p) => QueueState::Pending(p as u32),
        None => QueueState::Absent,
    }
}

/// A WebSocket event about our prompt (§3.2).
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    /// `execution_start`, or `executing` a node.
    Started,
    /// `progress` `value`/`max` (sampler steps).
    Progress {
        value: f64,
        max: f64,
    },
    /// `execution_success` or `executing` with `node: null`: read history.
    Done,
    /// `execution_error`: `"<node_type>: <exception_message>"`.
    Error(String),
    Interrupted,
    /// Another prompt's event, `status`, `progress_state`, or something unknown.
    Other,
}

/// Parses a text frame `{"type", "data": {"prompt_id", …}}`; events of other prompts and
/// anything unparsable are [`WsEvent::Other`] (the socket is only a hint; history decides).
pub fn parse_ws_event(text: &str, prompt_id: &str) -> WsEvent {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return WsEvent::Other;
    };
    let data = &v["data"];
    if data.get("prompt_id").and_then(Value::as_str) != Some(prompt_id) {
        return WsEvent::Other;
    }
    match v["type"].as_str().unwrap_or_default() {
        "execution_start" => WsEvent::Started,
        "executing" if data.get("node").is_some_and(Value::is_null) => WsEvent::Done,
        "executing" => WsEvent::Started,
        "execution_success" => WsEvent::Done,
        "progress" => match (data["value"].as_f64(), data["max"].as_f64()) {
            (Some(value), Some(max)) => WsEvent::Progress { value, max },
            _ => WsEvent::Other,
        },
        "execution_error" => WsEvent::Error(execution_error_text(data)),
        "execution_interrupted" => WsEvent::Interrupted,
        _ => WsEvent::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded ComfyUI 0.3.64 session (read at test time; outside the crate).
    fn recorded() -> Vec<Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/comfyui/recorded-0.3.64.json");
        let text = std::fs::read_to_string(path).expect("recorded session");
        let v: Value = serde_json::from_str(&text).expect("json");
        v["transcript"].as_array().expect("transcript").clone()
    }

    fn exchange(t: &[Value], label: &str) -> Value {
        t.iter().find(|e| e["label"] == label).unwrap_or_else(|| panic!("no exchange {label}")).clone()
    }

    fn vars<'a>(inputs: &'a [String]) -> TemplateVars<'a> {
        TemplateVars {
            prompt: "a \"red\" fox",
            negative: "",
            width: 832,
            height: 1216,
            seed: 7,
            input_images: inputs,
            duration: 5,
            frames: 80,
            fps: 16,
        }
    }

    #[test]
    fn placeholders_filled_numbers_are_numbers() {
        let wf = json!({
            "3": {"class_type": "KSampler", "inputs": {"seed": "{{seed}}", "steps": 20, "model": ["4", 0]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}"}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{negative}}"}},
            "8": {"class_type": "LoadImage", "inputs": {"image": "{{input_image}}"}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bot_{{seed}}_{{width}}x{{height}}", "{{prompt}}": "key kept"}},
        });
        let inputs = vec!["mediabot_x_0.png".to_string()];
        let g = fill_template(&wf, &vars(&inputs));
        assert_eq!(g["3"]["inputs"]["seed"], json!(7));
        assert!(g["3"]["inputs"]["seed"].is_u64());
        assert_eq!(g["5"]["inputs"]["width"], json!(832));
        assert_eq!(g["5"]["inputs"]["height"], json!(1216));
        assert_eq!(g["6"]["inputs"]["text"], json!("a \"red\" fox"));
        assert_eq!(g["7"]["inputs"]["text"], json!(""));
        assert_eq!(g["8"]["inputs"]["image"], json!("mediabot_x_0.png"));
        assert_eq!(g["9"]["inputs"]["filename_prefix"], json!("bot_7_832x1216"));
        assert_eq!(g["9"]["inputs"]["{{prompt}}"], json!("key kept"));
        assert_eq!(g["3"]["inputs"]["model"], json!(["4", 0]));
        // Without an upload the placeholder stays, and ComfyUI's validation names it.
        let g = fill_template(&wf, &vars(&[]));
        assert_eq!(g["8"]["inputs"]["image"], json!("{{input_image}}"));
        let two = vec!["a.png".to_string(), "b.png".to_string()];
        let g =
            fill_template(&json!({"x": "{{input_image_2}}", "y": "{{input_image_1}}+{{input_image_2}}"}), &vars(&two));
        assert_eq!(g, json!({"x": "b.png", "y": "a.png+b.png"}));
    }

    #[test]
    fn placeholders_in_user_text_are_not_filled() {
        let inputs = vec!["mediabot_x_0.png".to_string()];
        let vars = TemplateVars {
            prompt: "a cat {{seed}} {{width}}x{{height}} {{negative}}",
            negative: "{{input_image}} {{prompt}}",
            ..vars(&inputs)
        };
        let wf = json!({
            "6": {"inputs": {"text": "masterpiece, {{prompt}}, seed {{seed}}"}},
            "7": {"inputs": {"text": "ugly, {{negative}}"}},
            "8": {"inputs": {"text": "{{prompt}}"}},
            "9": {"inputs": {"text": "{{nope}} {{{{seed}} {{seed"}},
        });
        let g = fill_template(&wf, &vars);
        assert_eq!(
            g["6"]["inputs"]["text"],
            json!("masterpiece, a cat {{seed}} {{width}}x{{height}} {{negative}}, seed 7")
        );
        assert_eq!(g["7"]["inputs"]["text"], json!("ugly, {{input_image}} {{prompt}}"));
        assert_eq!(g["8"]["inputs"]["text"], json!("a cat {{seed}} {{width}}x{{height}} {{negative}}"));
        assert_eq!(g["9"]["inputs"]["text"], json!("{{nope}} {{7 {{seed"));
    }

    #[test]
    fn unknown_placeholders_are_named_and_known_ones_are_filled() {
        let wf = json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": "{{input_image}}"}},
            "2": {"class_type": "LoadImage", "inputs": {"image": "{{input_image_2}}"}},
            "5": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": "{{frame_count}}"}},
            "6": {"class_type": "Note", "inputs": {"text": "{{prompt}}, {{negative}} {{seed}} {{width}}x{{height}} {{ {{input_image_0}}"}},
            "7": {"class_type": "CreateVideo", "inputs": {"fps": ["{{fps}}", "{{frames}}", "{{duration}}"], "{{key}}": "keys are never filled"}},
        });
        let known = "(known: prompt, negative, width, height, seed, input_image, duration, frames, fps, input_image_N)";
        assert_eq!(
            unknown_placeholders(&wf),
            [
                format!("node 5 (RepeatImageBatch) input amount: unknown placeholder {{{{frame_count}}}} {known}"),
                format!("node 6 (Note) input text: unknown placeholder {{{{input_image_0}}}} {known}"),
            ]
        );
        // Every name the check accepts is one the template fills.
        let inputs = vec!["a.png".to_string(), "b.png".to_string()];
        for name in PLACEHOLDERS.iter().copied().chain(["input_image_1", "input_image_2"]) {
            assert!(TemplateVars::knows(name) && vars(&inputs).value(name).is_some(), "{name}");
        }
    }

    #[test]
    fn workflows_are_checked_against_object_info() {
        let info = json!({
            "EmptyImage": {"input": {"required": {"width": ["INT", {}], "height": ["INT", {}], "batch_size": ["INT", {}], "color": ["INT", {}]}}},
            "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]},
                                    "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}},
            "CreateVideo": {"input": {"required": {"images": ["IMAGE"], "fps": ["FLOAT", {}]}, "optional": {"audio": ["AUDIO"]}}},
        });
        let wf = json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "colour": 0}},
            "2": {"class_type": "ImageSharpenPlus", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8, "audio": ["9", 0]}},
            "4": {"inputs": {}},
            "10": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        });
        assert_eq!(
            object_info_mismatches(&wf, &info),
            [
                "node 1 (EmptyImage): unknown input colour",
                "node 1 (EmptyImage): required input color is missing",
                "node 2: unknown class_type ImageSharpenPlus (not on this server)",
                "node 4: no class_type",
            ]
        );
    }

    #[test]
    fn recorded_history_parses() {
        let t = recorded();
        let h = exchange(&t, "GET /history/{id} (invert)");
        let id = "593499d3-0cd0-4e3d-88fe-cb65a0d1d5f0";
        assert_eq!(
            parse_history(&h["response"]["json"], id).expect("ok"),
            History::Success(vec![OutputFile {
                filename: "invert_00001_.png".into(),
                subfolder: "harness".into(),
                kind: "output".into(),
                format: None,
                animated: false,
            }])
        );
        let h = exchange(&t, "GET /history/{id} (runtime_error)");
        assert_eq!(
            parse_history(&h["response"]["json"], "9811cebf-2d31-4cf9-abf0-4abf6409f090").expect("ok"),
            History::Error("ImageToMask: index 3 is out of bounds for dimension 3 with size 3".into())
        );
        let h = exchange(&t, "GET /history/{id} (interrupted)");
        assert_eq!(
            parse_history(&h["response"]["json"], "616e490f-239e-4255-8229-e20c25c7b062").expect("ok"),
            History::Error("execution interrupted".into())
        );
        let h = exchange(&t, "GET /history/{unknown id}");
        assert_eq!(
            parse_history(&h["response"]["json"], "00000000-0000-0000-0000-000000000000").expect("ok"),
            History::Pending
        );
        // SaveImageWebsocket leaves `outputs: {}`: nothing to download.
        let h = exchange(&t, "GET /history/{id} (ws_progress)");
        assert!(matches!(
            parse_history(&h["response"]["json"], "705aa6e1-bd2b-4801-9ab2-0b009f032073"),
            Err(ProviderError::Failed(_))
        ));
        assert!(matches!(parse_history(&json!([1]), "x"), Err(ProviderError::Failed(m)) if m.contains("malformed")));
    }

    fn recorded_video() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/comfyui/recorded-video-0.3.64.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("recorded video session")).expect("json")
    }

    fn testdata_workflow(name: &str) -> Value {
        let path = format!("{}/../shared/testdata/comfyui/workflows/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).expect("workflow")).expect("json")
    }

    #[test]
    fn video_templates_fill_to_the_recorded_graphs() {
        let rec = recorded_video();
        for name in ["video_from_image", "video_animated_webp", "video_animated_png", "video_webm"] {
            let tv = &rec["template_vars"][name];
            let inputs: Vec<String> = tv["input_image"].as_str().map(str::to_string).into_iter().collect();
            let n = |k: &str| u32::try_from(tv[k].as_u64().expect(k)).expect("u32");
            // The recording's 12 frames at 8 fps are 1.5 s; `{{duration}}` is whole seconds.
            let vars = TemplateVars {
                prompt: "",
                negative: "",
                width: n("width"),
                height: n("height"),
                seed: 0,
                input_images: &inputs,
                duration: 1,
                frames: n("frames"),
                fps: n("fps"),
            };
            let filled = fill_template(&testdata_workflow(&format!("{name}.json")), &vars);
            assert_eq!(filled, testdata_workflow(&format!("{name}.filled.json")), "{name}");
            assert!(unknown_placeholders(&testdata_workflow(&format!("{name}.json"))).is_empty(), "{name}");
        }
    }

    #[test]
    fn video_requests_fill_frames_fps_and_even_sizes() {
        let mut req = GenerateRequest {
            model_id: "wan".into(),
            task: crate::domain::Task::ImageToVideo,
            endpoint: String::new(),
            workflow: None,
            prompt: "waves".into(),
            negative: None,
            format: crate::domain::Format::Square,
            width: 833,
            height: 47,
            aspect_ratio: None,
            seed: 3,
            size_param: super::super::SizeParam::None,
            extra: Map::new(),
            input_images: vec![],
            image_fields: vec![],
            video: Some(VideoParams { duration_secs: 10, fps: 24 }),
        };
        let wf = json!({"1": {"inputs": {"w": "{{width}}", "h": "{{height}}", "n": "{{frames}}", "fps": "{{fps}}",
                                         "s": "{{duration}}", "name": "clip_{{duration}}s_{{fps}}fps"}}});
        let g = fill_template(&wf, &TemplateVars::for_request(&req, &[]));
        assert_eq!(
            g["1"]["inputs"],
            json!({"w": 832, "h": 46, "n": 240, "fps": 24, "s": 10, "name": "clip_10s_24fps"})
        );
        // Another task on a video workflow: the default clip, sizes as asked.
        req.task = crate::domain::Task::TextToImage;
        req.video = None;
        let g = fill_template(&wf, &TemplateVars::for_request(&req, &[]));
        assert_eq!(g["1"]["inputs"]["n"], json!(80));
        assert_eq!((&g["1"]["inputs"]["w"], &g["1"]["inputs"]["h"]), (&json!(833), &json!(47)));
    }

    #[test]
    fn recorded_video_histories_parse() {
        let rec = recorded_video();
        let t = rec["transcript"].as_array().expect("transcript");
        for (label, file) in [
            ("video_from_image", "video_00001_.mp4"),
            ("video_animated_webp", "anim_00001_.webp"),
            ("video_animated_png", "apng_00001_.png"),
            ("video_webm", "webm_00001_.webm"),
            ("video_webm (cached rerun)", "webm_00001_.webm"),
        ] {
            let h = &exchange(t, &format!("GET /history/{{id}} ({label})"))["response"]["json"];
            let id = h.as_object().and_then(|o| o.keys().next()).expect("one entry").clone();
            let files = match parse_history(h, &id).expect("parses") {
                History::Success(f) => f,
                other => panic!("{label}: {other:?}"),
            };
            assert_eq!(files.len(), 1, "{label}");
            assert_eq!((files[0].filename.as_str(), files[0].subfolder.as_str()), (file, "harness"), "{label}");
            assert!(files[0].animated && files[0].is_video(), "{label}");
        }
        let h = &exchange(t, "GET /history/{id} (video_from_image, odd height)")["response"]["json"];
        match parse_history(h, "13231cf5-8162-4d16-b353-a0f8fa1a43d8").expect("parses") {
            History::Error(m) => {
                assert!(m.starts_with("SaveVideo: "), "{m}");
                assert!(m.contains("height not divisible by 2 (64x47)"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn history_puts_videos_first_and_takes_vhs_gifs() {
        let gif = |kind: &str| {
            json!({"filename": "clip_00001.mp4", "subfolder": "", "type": kind, "format": "video/h264-mp4",
                   "frame_rate": 16.0, "workflow": "clip_00001.png", "fullpath": "/x/output/clip_00001.mp4"})
        };
        let entry = |outputs: Value| json!({"p": {"outputs": outputs, "status": {"status_str": "success"}}});
        let h = entry(json!({
            "3": {"images": [{"filename": "still_00001_.png", "subfolder": "", "type": "output"}]},
            "9": {"gifs": [gif("output")]},
        }));
        let History::Success(files) = parse_history(&h, "p").expect("ok") else { panic!("success") };
        assert_eq!(
            files.iter().map(|f| f.filename.as_str()).collect::<Vec<_>>(),
            ["clip_00001.mp4", "still_00001_.png"]
        );
        assert_eq!(files[0].format.as_deref(), Some("video/h264-mp4"));
        assert!(files[0].animated && !files[1].animated && !files[1].is_video());
        // VHS with save_output off: only a temp file; PreviewImage temps are never taken.
        let h = entry(json!({
            "4": {"images": [{"filename": "prev.png", "subfolder": "", "type": "temp"}]},
            "9": {"gifs": [gif("temp")]},
        }));
        let History::Success(files) = parse_history(&h, "p").expect("ok") else { panic!("success") };
        assert_eq!((files.len(), files[0].kind.as_str()), (1, "temp"));
        // A one-frame SaveAnimatedWEBP says `animated: [false]`: a picture.
        let h = entry(
            json!({"7": {"images": [{"filename": "a.webp", "subfolder": "", "type": "output"}], "animated": [false]}}),
        );
        let History::Success(files) = parse_history(&h, "p").expect("ok") else { panic!("success") };
        assert!(!files[0].is_video());
    }

    #[test]
    fn recorded_rejections_summarized() {
        let t = recorded();
        let r = exchange(&t, "POST /prompt (bad_input (bad combo + out of range))");
        assert_eq!(r["response"]["status"], 400);
        let s = summarize_rejection(&r["response"]["json"]).expect("summary");
        assert!(s.starts_with("Prompt outputs failed validation; node 2 (ImageScaleBy): "), "{s}");
        assert!(s.contains("Value 100.0 bigger than max of 8.0 [scale_by]"), "{s}");
        assert!(s.contains("upscale_method: 'bogus' not in"), "{s}");
        let r = exchange(&t, "POST /prompt (unknown class_type)");
        assert_eq!(
            summarize_rejection(&r["response"]["json"]).expect("summary"),
            "Cannot execute because node NoSuchNode does not exist. (Node ID '#1')"
        );
        for e in t.iter().filter(|e| e["response"]["status"] == 400) {
            assert!(summarize_rejection(&e["response"]["json"]).is_some(), "{}", e["label"]);
        }
    }

    #[test]
    fn recorded_ws_frames_parse() {
        let t = recorded();
        let frames = |label: &str, id: &str| -> Vec<WsEvent> {
            exchange(&t, label)["ws"]
                .as_array()
                .expect("ws")
                .iter()
                .filter_map(|f| f.get("text"))
                .map(|f| parse_ws_event(&f.to_string(), id))
                .filter(|e| *e != WsEvent::Other)
                .collect()
        };
        let ev = frames("WS messages (ws_progress)", "705aa6e1-bd2b-4801-9ab2-0b009f032073");
        assert!(ev.contains(&WsEvent::Progress { value: 2.0, max: 3.0 }), "{ev:?}");
        assert_eq!(ev.last(), Some(&WsEvent::Done));
        let ev = frames("WS messages (runtime_error)", "9811cebf-2d31-4cf9-abf0-4abf6409f090");
        assert!(
            ev.contains(&WsEvent::Error("ImageToMask: index 3 is out of bounds for dimension 3 with size 3".into()))
        );
        let ev = frames("WS messages (slow, after POST /interrupt)", "616e490f-239e-4255-8229-e20c25c7b062");
        assert!(ev.contains(&WsEvent::Interrupted));
        // Another prompt's frames are ignored.
        assert!(frames("WS messages (invert)", "someone-else").is_empty());
    }

    #[test]
    fn recorded_queue_parses() {
        let t = recorded();
        let q = &exchange(&t, "GET /queue (1 running, 1 pending)")["response"]["json"];
        assert_eq!(queue_state(q, "616e490f-239e-4255-8229-e20c25c7b062"), QueueState::Running);
        assert_eq!(queue_state(q, "1661d829-d607-4d8d-bce3-3495d63ad426"), QueueState::Pending(0));
        assert_eq!(queue_state(q, "nope"), QueueState::Absent);
    }
}
