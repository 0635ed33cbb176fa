//! One job from its stored state to the end: submit → wait → store the result → capture →
//! deliver; or fail → release → tell the user. Each state change is persisted before the next
//! outside call.

use super::{Inner, JobProgress, ResultFiles, backoff, eta_from};
use crate::domain::{Format, ImageId, JobStatus, MediaKind, Switch, now_ms};
use crate::providers::{GenerateRequest, GeneratedFile, InputImage, ProviderError, ProviderProgress, Submission};
use crate::store::StoreError;
use crate::store::records::{Delivery, ErrorClass, JobError, JobPayload, JobRecord, LibraryItem, Translation};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Drives a job until it is terminal and its final message is sent.
pub(crate) async fn drive(inner: &Arc<Inner>, mut job: JobRecord) {
    if matches!(job.payload, JobPayload::AddText { .. } | JobPayload::Resize { .. }) && !job.status.is_terminal() {
        return run_local(inner, job).await;
    }
    if matches!(job.payload, JobPayload::WritePrompt { .. }) && !job.status.is_terminal() {
        return run_write(inner, job).await;
    }
    // Switched off since the job was made (or made for a model offered through its
    // fallback): it moves before anything is sent. With no usable fallback it runs as before.
    if job.status == JobStatus::Queued && !inner.catalog.is_usable(&job.model_id) {
        let why = switched_off_reason(inner, &job);
        match failover(inner, job, why).await {
            Ok(()) => return,
            Err(j) => job = j,
        }
    }
    loop {
        match job.status {
            JobStatus::Queued | JobStatus::Submitting => match submit(inner, job).await {
                Step::Next(j) => job = j,
                Step::Done => return,
            },
            JobStatus::Submitted => match wait(inner, job).await {
                Step::Next(j) => job = j,
                Step::Done => return,
            },
            // Its owner's answer moves it on (`answer`); nothing runs meanwhile.
            JobStatus::AwaitingConfirmation => return,
            _ => {
                finish_message(inner, job).await;
                return;
            }
        }
    }
}

enum Step {
    Next(JobRecord),
    Done,
}

async fn save(inner: &Inner, job: &JobRecord) -> Result<(), StoreError> {
    let j = job.clone();
    inner.store.write(move |tx| tx.put_job(&j)).await
}

fn classify(e: &ProviderError) -> ErrorClass {
    match e {
        ProviderError::Transient(_) | ProviderError::RateLimited { .. } | ProviderError::ServerDown(_) => {
            ErrorClass::Transient
        }
        ProviderError::Rejected(_) => ErrorClass::Rejected,
        ProviderError::Retired(_) => ErrorClass::Retired,
        ProviderError::Unauthorized(_) => ErrorClass::Unauthorized,
        ProviderError::PaymentRequired(_) => ErrorClass::PaymentRequired,
        ProviderError::Misconfigured(_) => ErrorClass::Misconfigured,
        ProviderError::Failed(_) | ProviderError::Lost(_) => ErrorClass::Failed,
    }
}

async fn build_request(inner: &Inner, job: &JobRecord) -> Result<GenerateRequest, String> {
    let model = inner.catalog.model(&job.model_id).ok_or("model no longer configured")?;
    let JobPayload::Generate { prompt, negative, format, width, height, aspect_ratio, seed, inputs, options } =
        &job.payload
    else {
        return Err("not a provider job".into());
    };
    let mut input_images = Vec::new();
    for sha in inputs {
        let store = inner.store.clone();
        let sha = sha.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let b = std::fs::read(store.find_media_file(&sha)?.0).ok()?;
            // Stored inputs are already stripped; this bounds the data URI / upload size
            // (a provider refusing a 15 MB photo would cost the user a retry).
            let limits = crate::imaging::Limits::default();
            Some(crate::imaging::compress_for_api(&b, crate::imaging::API_MAX_BYTES, &limits))
        })
        .await
        .ok()
        .flatten()
        .ok_or("input image missing")?
        .map_err(|e| format!("input image: {e}"))?;
        let mime = crate::providers::sniff_mime(&bytes).to_string();
        input_images.push(InputImage { bytes, mime });
    }
    let video = model.task.is_video().then(|| {
        let chosen = model.chosen_values(options);
        let number = |name: &str| chosen.get(name).or(model.params.get(name)).and_then(crate::providers::json_u32);
        crate::providers::VideoParams {
            duration_secs: number("duration").unwrap_or(crate::providers::DEFAULT_DURATION_SECS).max(1),
            fps: number("fps").unwrap_or(crate::providers::DEFAULT_FPS).clamp(1, 120),
        }
    });
    let (width, height) = match video {
        Some(_) => (crate::providers::even(*width), crate::providers::even(*height)),
        None => (*width, *height),
    };
    Ok(GenerateRequest {
        model_id: model.id.clone(),
        task: model.task,
        endpoint: model.endpoint.clone(),
        workflow: inner.workflows.get(&model.id).cloned(),
        // A model's fixed instruction leads; the user's words (if any, in English when they
        // were translated) follow it.
        prompt: match (model.instruction.as_deref(), user_words(job, prompt).trim()) {
            (Some(fixed), "") => fixed.to_string(),
            (Some(fixed), own) => format!("{fixed}\n{own}"),
            (None, _) => user_words(job, prompt).to_string(),
        },
        negative: negative.clone(),
        format: *format,
        width,
        height,
        aspect_ratio: aspect_ratio.clone(),
        seed: *seed,
        size_param: model.size_param,
        // The user's choices win over the model's fixed params of the same name.
        extra: model.params.clone().into_iter().chain(model.chosen_params(options)).collect(),
        input_images,
        image_fields: model.image_fields.clone(),
        video,
    })
}

/// The user's prompt as the provider gets it: the stored English translation, if any.
fn user_words<'a>(job: &'a JobRecord, prompt: &'a str) -> &'a str {
    match &job.translation {
        Some(Translation::English { text }) => text,
        _ => prompt,
    }
}

/// Longest translation accepted, in characters: a prompt's translation is about as long as the
/// prompt (at most a few thousand characters); anything longer is not one.
const MAX_TRANSLATION_CHARS: usize = 8000;

/// True when a prompt needs translating: it has a letter outside ASCII (Cyrillic, accented
/// Latin, CJK, …). A prompt of ASCII letters, digits, punctuation and emoji is taken as English
/// already and sent as written — no language-model call, no delay.
pub(crate) fn needs_translation(prompt: &str) -> bool {
    prompt.chars().any(|c| c.is_alphabetic() && !c.is_ascii())
}

/// Decides the translation of a job for a `translate = true` model, once (`None` for other
/// models and jobs already decided). The language model gets `llm.translate_timeout_secs`;
/// on any error or on expiry the original prompt is used, logged once at WARN: translation
/// improves a job, it never fails or holds one up.
async fn decide_translation(inner: &Inner, job: &JobRecord) -> Option<Translation> {
    if job.translation.is_some() || !inner.catalog.model(&job.model_id).is_some_and(|m| m.translate) {
        return None;
    }
    let JobPayload::Generate { prompt, .. } = &job.payload else { return None };
    let prompt = prompt.trim();
    if !needs_translation(prompt) {
        return Some(Translation::Original);
    }
    let Some(llm) = inner.llm.as_ref() else {
        // check-config refuses `translate` without [llm]; nothing to ask here.
        return Some(Translation::Original);
    };
    let started = Instant::now();
    let answer = tokio::time::timeout(inner.translate_timeout, llm.translate(prompt)).await;
    let fallback = |why: String| {
        let ms = started.elapsed().as_millis() as u64;
        tracing::warn!(error = %why, ms, "prompt not translated; sending it as written");
        Some(Translation::Original)
    };
    match answer {
        Ok(Ok(text)) if text.chars().count() > MAX_TRANSLATION_CHARS => {
            fallback(format!("the translation is {} characters long", text.chars().count()))
        }
        Ok(Ok(text)) if text == prompt => Some(Translation::Original),
        Ok(Ok(text)) => {
            tracing::info!(ms = started.elapsed().as_millis() as u64, "prompt translated");
            Some(Translation::English { text })
        }
        Ok(Err(e)) => fallback(e.to_string()),
        Err(_) => fallback(format!("no answer in {} s", inner.translate_timeout.as_secs())),
    }
}

async fn submit(inner: &Arc<Inner>, mut job: JobRecord) -> Step {
    let Some(provider) = inner.providers.get(&job.provider_id).cloned() else {
        fail(inner, job, ErrorClass::Internal, "provider not configured".into()).await;
        return Step::Done;
    };
    // Crash recovery: we chose an id and may have submitted it before dying.
    if job.status == JobStatus::Submitting {
        if let Some(id) = job.preassigned_id.clone() {
            match provider.is_known(&id, &serde_json::Value::Null).await {
                Ok(true) => {
                    job.submission = Some(Submission { request_id: id, data: serde_json::Value::Null });
                    job.status = JobStatus::Submitted;
                    job.submitted_at.get_or_insert(now_ms());
                    if save(inner, &job).await.is_err() {
                        return Step::Done;
                    }
                    return Step::Next(job);
                }
                Ok(false) => {}
                Err(_) if past_submit_deadline(inner, &job) => return submit_timed_out(inner, job, &provider).await,
                Err(e) => {
                    // Asking is an attempt too: uncounted, a provider that stays down would be
                    // asked forever at the first backoff step.
                    job.attempts += 1;
                    return retry_or_fail(inner, job, e).await;
                }
            }
        }
    }
    // A job that began submitting and never got through (the provider down or unreachable)
    // ends at the model's timeout like a submitted one, whatever attempts are left.
    if past_submit_deadline(inner, &job) {
        return submit_timed_out(inner, job, &provider).await;
    }
    // Before the first submit only: the decision is stored with the job below, so a retry or
    // a restart sends the same words.
    if let Some(t) = decide_translation(inner, &job).await {
        job.translation = Some(t);
    }
    let req = match build_request(inner, &job).await {
        Ok(r) => r,
        Err(e) => {
            fail(inner, job, ErrorClass::Internal, e).await;
            return Step::Done;
        }
    };
    job.preassigned_id = job.preassigned_id.clone().or_else(|| provider.preassign_id());
    job.status = JobStatus::Submitting;
    job.started_at.get_or_insert(now_ms());
    job.attempts += 1;
    if save(inner, &job).await.is_err() {
        return Step::Done;
    }
    let eta = eta_from(&inner.store, job.model_id.clone(), super::video::job_stats_key(inner, &job)).await;
    notify_progress(inner, &job, JobProgress { running: false, percent: 0, queue_position: None, eta_secs: eta }).await;
    match provider.submit(&req, job.preassigned_id.as_deref()).await {
        Ok(sub) => {
            tracing::info!(request_id = %sub.request_id, "submitted");
            job.submission = Some(sub);
            job.status = JobStatus::Submitted;
            job.submitted_at = Some(now_ms());
            if save(inner, &job).await.is_err() {
                return Step::Done;
            }
            Step::Next(job)
        }
        Err(e) => retry_or_fail(inner, job, e).await,
    }
}

/// Retries a transient failure to submit (`job.attempts` already counts this one) after the
/// backoff, or fails the job: not transient, `jobs.max_attempts` reached. The sleep never
/// runs past the submit deadline, where [`submit`] fails the job as timed out.
async fn retry_or_fail(inner: &Arc<Inner>, mut job: JobRecord, e: ProviderError) -> Step {
    let class = classify(&e);
    tracing::warn!(error = %e, attempts = job.attempts, "provider error");
    if class == ErrorClass::Transient && job.attempts < inner.cfg.max_attempts {
        job.error = Some(JobError { class, detail: e.to_string() });
        let mut delay = backoff(inner.cfg.retry_base_ms, job.attempts.max(1));
        if let ProviderError::RateLimited { retry_after, .. } = &e {
            delay = delay.max(*retry_after);
        }
        if let Some(deadline) = submit_deadline(inner, &job) {
            delay = delay.min(Duration::from_millis((deadline - now_ms()).max(0) as u64));
        }
        // A job that failed to submit goes back to the queue; a submitted one keeps its id.
        if job.status == JobStatus::Submitting && job.preassigned_id.is_none() {
            job.status = JobStatus::Queued;
        }
        if save(inner, &job).await.is_err() {
            return Step::Done;
        }
        tokio::time::sleep(delay).await;
        return Step::Next(job);
    }
    fail(inner, job, class, e.to_string()).await;
    Step::Done
}

async fn wait(inner: &Arc<Inner>, mut job: JobRecord) -> Step {
    let Some(provider) = inner.providers.get(&job.provider_id).cloned() else {
        fail(inner, job, ErrorClass::Internal, "provider not configured".into()).await;
        return Step::Done;
    };
    let Some(sub) = job.submission.clone() else {
        job.status = JobStatus::Queued;
        return Step::Next(job);
    };
    let timeout_secs = job_timeout_secs(inner, &job);
    let started = job.submitted_at.unwrap_or_else(now_ms);
    let deadline_ms = started + (timeout_secs as i64) * 1000;
    let left = Duration::from_millis((deadline_ms - now_ms()).max(0) as u64);
    let eta = eta_from(&inner.store, job.model_id.clone(), super::video::job_stats_key(inner, &job)).await;

    // Progress from the provider callback is sampled by a ticker that applies the edit limit.
    let latest: Arc<Mutex<ProviderProgress>> = Arc::default();
    let cb_latest = latest.clone();
    let cb = move |p: ProviderProgress| {
        if let Ok(mut l) = cb_latest.lock() {
            *l = p;
        }
    };
    let ticker = {
        let inner = inner.clone();
        let job = job.clone();
        let latest = latest.clone();
        let wait_started = Instant::now();
        let elapsed_before = (now_ms() - started).max(0) as u64 / 1000;
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let interval = Duration::from_millis(inner.cfg.progress_interval_ms.max(100));
            loop {
                tokio::time::sleep(interval).await;
                let p = latest.lock().map(|l| *l).unwrap_or_default();
                let elapsed = elapsed_before + wait_started.elapsed().as_secs();
                let by_time = ((elapsed as f32 / eta.max(1) as f32) * 100.0).min(95.0);
                let percent = p.fraction.map(|f| (f * 100.0).min(99.0)).unwrap_or(by_time) as u8;
                let progress = JobProgress {
                    running: p.running || p.fraction.is_some(),
                    percent,
                    queue_position: p.queue_position.map(|q| q + 1),
                    eta_secs: eta.saturating_sub(elapsed),
                };
                inner.notifier.progress(&job, progress).await;
            }
        }))
    };
    let result = tokio::time::timeout(left, provider.wait(&sub, &cb)).await;
    ticker.abort();
    match result {
        Ok(Ok(images)) => {
            store_result(inner, job, images).await;
            Step::Done
        }
        // The request's server died with it: submit the job again (the provider picks a
        // healthy server). The old submission is dropped and saved first, so nothing polls the
        // dead server again and a late result from it can never be delivered.
        Ok(Err(e @ ProviderError::ServerDown(_))) if job.attempts < inner.cfg.max_attempts => {
            tracing::warn!(error = %e, request_id = %sub.request_id, "submitting the job again elsewhere");
            job.error = Some(JobError { class: ErrorClass::Transient, detail: e.to_string() });
            job.submission = None;
            job.preassigned_id = None;
            job.submitted_at = None;
            job.status = JobStatus::Queued;
            if save(inner, &job).await.is_err() {
                return Step::Done;
            }
            Step::Next(job)
        }
        Ok(Err(e)) if classify(&e) == ErrorClass::Transient && job.attempts < inner.cfg.max_attempts => {
            job.attempts += 1;
            tracing::warn!(error = %e, "transient error while waiting; polling again");
            job.error = Some(JobError { class: ErrorClass::Transient, detail: e.to_string() });
            if save(inner, &job).await.is_err() {
                return Step::Done;
            }
            let mut delay = backoff(inner.cfg.retry_base_ms, job.attempts);
            if let ProviderError::RateLimited { retry_after, .. } = &e {
                delay = delay.max(*retry_after);
            }
            tokio::time::sleep(delay).await;
            Step::Next(job)
        }
        Ok(Err(e)) => {
            let class = classify(&e);
            fail(inner, job, class, e.to_string()).await;
            Step::Done
        }
        Err(_) => {
            let _ = provider.cancel(&sub).await;
            fail(inner, job, ErrorClass::Timeout, format!("no result after {timeout_secs} s")).await;
            Step::Done
        }
    }
}

/// Seconds a job may wait for its result once submitted (and may spend getting submitted):
/// the model's `timeout_secs`, else 900 for video and the provider's `timeout_secs` for the rest.
fn job_timeout_secs(inner: &Inner, job: &JobRecord) -> u64 {
    inner
        .catalog
        .model(&job.model_id)
        .map(|m| {
            m.timeout_secs.unwrap_or(match m.task {
                // Video models take minutes; images a minute or two.
                t if t.is_video() => 900,
                _ => inner.provider_cfg.get(&job.provider_id).map(|p| p.timeout_secs).unwrap_or(600),
            })
        })
        .unwrap_or(600)
}

/// When a job that began submitting (`started_at`) and is not yet submitted fails as timed
/// out (ms since the epoch); `None` before its first attempt.
fn submit_deadline(inner: &Inner, job: &JobRecord) -> Option<i64> {
    let started = job.started_at.filter(|_| job.submission.is_none())?;
    Some(started.saturating_add(i64::try_from(job_timeout_secs(inner, job)).unwrap_or(i64::MAX / 1000) * 1000))
}

fn past_submit_deadline(inner: &Inner, job: &JobRecord) -> bool {
    submit_deadline(inner, job).is_some_and(|d| now_ms() >= d)
}

/// Fails a job that could not be submitted within its timeout; a preassigned id may have
/// arrived unseen, so the provider is asked to drop it (best effort, after the user was told).
async fn submit_timed_out(inner: &Arc<Inner>, job: JobRecord, provider: &crate::providers::DynProvider) -> Step {
    let limit = job_timeout_secs(inner, &job);
    let asked = job.preassigned_id.clone();
    fail(inner, job, ErrorClass::Timeout, format!("not submitted within {limit} s")).await;
    if let Some(id) = asked {
        let _ = provider.cancel(&Submission { request_id: id, data: serde_json::Value::Null }).await;
    }
    Step::Done
}

/// Marks a job that runs in this process (a local tool, a prompt to write) as started and
/// shows it running with its ETA. `false` when the start could not be saved (the job stays
/// queued and is picked up again).
async fn begin_in_process(inner: &Arc<Inner>, job: &mut JobRecord) -> bool {
    job.status = JobStatus::Submitting;
    job.started_at.get_or_insert(now_ms());
    job.attempts += 1;
    if save(inner, job).await.is_err() {
        return false;
    }
    let eta = eta_from(&inner.store, job.model_id.clone(), super::video::job_stats_key(inner, &job)).await;
    notify_progress(inner, job, JobProgress { running: true, percent: 0, queue_position: None, eta_secs: eta }).await;
    true
}

/// Runs a local tool job ("📝 Add text", "🔍 Resize") on a blocking thread and stores its
/// result like a provider's. Nothing external is called, so a job interrupted here simply runs
/// again.
async fn run_local(inner: &Arc<Inner>, mut job: JobRecord) {
    if !begin_in_process(inner, &mut job).await {
        return;
    }
    let store = inner.store.clone();
    let limits = inner.limits.clone();
    let payload = job.payload.clone();
    let drawn = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let read = |input: &str| {
            store.find_media_file(input).and_then(|(path, _)| std::fs::read(path).ok()).ok_or("input image missing")
        };
        match payload {
            JobPayload::AddText { input, text, wishes } => {
                let style = crate::imaging::parse_wishes(&wishes).style;
                crate::imaging::overlay_text(&read(&input)?, &text, &style, &limits).map_err(|e| e.to_string())
            }
            JobPayload::Resize { input, factor, .. } => {
                crate::imaging::enlarge(&read(&input)?, factor, &limits).map_err(|e| e.to_string())
            }
            JobPayload::Generate { .. } | JobPayload::WritePrompt { .. } => Err("not a local job".into()),
        }
    })
    .await;
    match drawn {
        Ok(Ok(bytes)) => {
            let file = GeneratedFile { bytes, mime: "image/jpeg".into(), is_demo: false };
            store_result(inner, job, vec![file]).await
        }
        Ok(Err(e)) => fail(inner, job, ErrorClass::Failed, e).await,
        Err(e) => fail(inner, job, ErrorClass::Internal, e.to_string()).await,
    }
}

/// Runs a "✍️ Write" job: the language model writes the prompt (bounded by `llm.timeout_secs`),
/// which is kept in the job's payload in the transaction that captures the hold, then sent.
/// A failure or a timeout releases the hold: nothing is charged, and the user is told. The
/// call is not retried (a model that did not answer in time would keep the user waiting).
/// Interrupted by a crash before the capture, the job simply runs again.
async fn run_write(inner: &Arc<Inner>, mut job: JobRecord) {
    let JobPayload::WritePrompt { idea, .. } = job.payload.clone() else { return };
    if !begin_in_process(inner, &mut job).await {
        return;
    }
    let Some(llm) = inner.llm.clone() else {
        return fail(inner, job, ErrorClass::Misconfigured, "no [llm] language model is configured".into()).await;
    };
    let text = match llm.write_prompt(&idea).await {
        Ok(text) => text,
        Err(e) => {
            let class = match &e {
                crate::llm::LlmError::Timeout => ErrorClass::Timeout,
                crate::llm::LlmError::Refused(_) => ErrorClass::Rejected,
                crate::llm::LlmError::Unavailable(_) => ErrorClass::Transient,
                _ => ErrorClass::Failed,
            };
            return fail(inner, job, class, e.to_string()).await;
        }
    };
    job.status = JobStatus::Succeeded;
    job.finished_at = Some(now_ms());
    job.error = None;
    job.payload = JobPayload::WritePrompt { idea, written: Some(text) };
    let duration = (job.finished_at.unwrap_or(0) - job.started_at.unwrap_or(job.created_at)).max(0) as u64;
    let key = super::video::job_stats_key(inner, &job);
    let j = job.clone();
    let saved = inner
        .store
        .write(move |tx| {
            let mut j = j;
            if tx.get_job(j.id)?.is_some_and(|s| s.status.is_terminal()) {
                return Ok(None); // cancelled meanwhile: keep the stored outcome
            }
            crate::billing::capture(tx, &mut j)?;
            tx.insert_duration(&j.model_id, &key, j.id, duration)?;
            tx.put_job(&j)?;
            Ok::<_, super::JobsError>(Some(j))
        })
        .await;
    match saved {
        Ok(Some(j)) => finish_message(inner, j).await,
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "could not record the written prompt"),
    }
}

/// Largest result kept without `web.public_url`, bytes: what the Bot API takes in one
/// multipart upload (sendVideo, sendDocument: 50 MB, protocols.md §1.4). With it, a bigger
/// result (up to [`super::media::MAX_LINKED_BYTES`]) is kept and sent as a download link.
const MAX_RESULT_BYTES: usize = super::media::TELEGRAM_UPLOAD_BYTES;

/// Stores the first result file in the library and captures the hold in one transaction, then
/// delivers. Capture happens once the user's value exists, whatever happens to delivery. The
/// file's kind comes from its bytes: a picture must decode, a video or another file is kept
/// as it came.
async fn store_result(inner: &Arc<Inner>, mut job: JobRecord, files: Vec<GeneratedFile>) {
    let Some(file) = files.into_iter().next() else {
        fail(inner, job, ErrorClass::Failed, "provider returned no file".into()).await;
        return;
    };
    if file.bytes.len() > MAX_RESULT_BYTES && inner.links.is_none() {
        let detail = format!("{} bytes, more than Telegram takes and no web.public_url for a link", file.bytes.len());
        fail(inner, job, ErrorClass::TooLarge, detail).await;
        return;
    }
    let max_bytes = if inner.links.is_some() { super::media::MAX_LINKED_BYTES } else { MAX_RESULT_BYTES };
    let store = inner.store.clone();
    let limits = inner.limits.clone();
    type Prepared = (String, &'static str, MediaKind, &'static str, u32, u32, GeneratedFile);
    let prepared = tokio::task::spawn_blocking(move || -> Result<Prepared, String> {
        if file.bytes.len() > max_bytes {
            return Err(format!("{} bytes, more than Telegram takes", file.bytes.len()));
        }
        // What is stored is what every later send uses: the workflow (ComfyUI's `prompt`
        // chunk), the seed and file names never reach the user.
        let stripped = crate::imaging::strip_result_metadata(&file.bytes, &limits).map_err(|e| e.to_string())?;
        let file = GeneratedFile { bytes: super::media::storable(stripped), ..file };
        let (media, mime, ext) = MediaKind::sniff(&file.bytes);
        let (width, height) = match media {
            MediaKind::Image => {
                let info = crate::imaging::probe(&file.bytes).map_err(|e| e.to_string())?;
                crate::imaging::decode(&file.bytes, &limits).map_err(|e| e.to_string())?;
                (info.width, info.height)
            }
            MediaKind::Video | MediaKind::Animation => super::media::dimensions(&file.bytes),
            MediaKind::File => (0, 0),
        };
        let sha = crate::imaging::sha256_hex(&file.bytes);
        store.put_media_file(&sha, ext, &file.bytes).map_err(|e| e.to_string())?;
        Ok((sha, ext, media, mime, width, height, file))
    })
    .await;
    let (sha, ext, media, mime, width, height, file) = match prepared {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            fail(inner, job, ErrorClass::Failed, format!("unusable result: {e}")).await;
            return;
        }
        Err(e) => {
            fail(inner, job, ErrorClass::Internal, e.to_string()).await;
            return;
        }
    };
    let (kind, prompt, negative, format, seed) = match job.payload.clone() {
        JobPayload::Generate { prompt, negative, format, seed, .. } => ("create", prompt, negative, format, seed),
        JobPayload::AddText { text, .. } => ("add_text", text, None, Format::from_dims(width, height), 0),
        JobPayload::Resize { prompt, .. } => ("resize", prompt, None, Format::from_dims(width, height), 0),
        JobPayload::WritePrompt { idea, .. } => ("write", idea, None, Format::from_dims(width, height), 0),
    };
    let item = LibraryItem {
        id: ImageId::new(),
        owner: job.user_id,
        job_id: Some(job.id),
        kind: kind.into(),
        prompt,
        negative,
        model_id: job.model_id.clone(),
        format,
        seed,
        width,
        height,
        bytes: file.bytes.len() as u64,
        sha256: sha,
        ext: ext.to_string(),
        mime: mime.to_string(),
        created_at: now_ms(),
        favourite: false,
        categories: vec![],
        photo_file_id: None,
        document_file_id: None,
        is_demo: file.is_demo,
        source: match &job.payload {
            JobPayload::Resize { source, .. } => *source,
            _ => None,
        },
        media,
    };
    job.status = JobStatus::Succeeded;
    job.finished_at = Some(now_ms());
    job.result = Some(item.id);
    job.error = None;
    let duration = (job.finished_at.unwrap_or(0) - job.started_at.unwrap_or(job.created_at)).max(0) as u64;
    let key = super::video::job_stats_key(inner, &job);
    let (j, it) = (job.clone(), item.clone());
    let (store, bytes) = (inner.store.clone(), file.bytes.clone());
    let (max_items, budget) = (inner.library.max_items_per_user, inner.library.disk_budget_mb.saturating_mul(1 << 20));
    let saved = inner
        .store
        .write_pruning(move |tx| {
            let mut j = j;
            if tx.get_job(j.id)?.is_some_and(|s| s.status.is_terminal()) {
                return Ok((None, vec![])); // cancelled or finished meanwhile: keep the stored outcome
            }
            // Again under the write lock: a deletion of the last item with these bytes may have
            // removed the file since it was written above (a no-op when it is there).
            store.put_media_file(&it.sha256, &it.ext, &bytes)?;
            tx.insert_library_item(&it)?;
            crate::billing::capture(tx, &mut j)?;
            tx.insert_duration(&j.model_id, &key, j.id, duration)?;
            tx.put_job(&j)?;
            let kept = tx.enforce_retention(j.user_id, it.id, max_items, budget)?;
            Ok::<_, super::JobsError>((Some((j, kept.favourites_full, kept.removed.len())), kept.orphans))
        })
        .await;
    match saved {
        Ok(Some((j, favourites_full, removed))) => {
            tracing::info!(ms = duration, removed, ?media, "job succeeded");
            if favourites_full {
                inner.notifier.library_full(&j, max_items).await;
            }
            deliver(inner, j, item, file.bytes).await
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "could not store the result"),
    }
}

/// Marks the job failed (or cancelled) and releases its hold in one transaction, then tells
/// the user. A failure its model's fallback may not share ([`fails_over`]) first moves the
/// job there ([`failover`]); only when none can take it does the job fail.
pub(crate) async fn fail(inner: &Arc<Inner>, mut job: JobRecord, class: ErrorClass, detail: String) {
    if fails_over(class) && job.failover.is_none() && matches!(job.payload, JobPayload::Generate { .. }) {
        // The switch goes off first, so this move and every later job see the model as it is.
        job.error = Some(JobError { class, detail: detail.clone() });
        disable_if_needed(inner, &job).await;
        let why: String = format!("{}: {detail}", class_name(class)).chars().take(300).collect();
        match failover(inner, job, why).await {
            Ok(()) => return,
            Err(j) => job = j,
        }
    }
    tracing::warn!(?class, %detail, "job failed");
    job.status = if class == ErrorClass::Cancelled { JobStatus::Cancelled } else { JobStatus::Failed };
    job.error = Some(JobError { class, detail });
    job.finished_at = Some(now_ms());
    let j = job.clone();
    let saved = inner
        .store
        .write(move |tx| {
            let mut j = j;
            if tx.get_job(j.id)?.is_some_and(|s| s.status.is_terminal()) {
                return Ok(None);
            }
            crate::billing::release(tx, &mut j)?;
            tx.put_job(&j)?;
            Ok::<_, super::JobsError>(Some(j))
        })
        .await;
    match saved {
        Ok(Some(j)) => {
            disable_if_needed(inner, &j).await;
            finish_message(inner, j).await
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "could not record the failure"),
    }
}

/// Classes after which a job moves to its model's fallback: the model or its provider is
/// switched off (retired, key refused, region blocked, payment required, misconfigured), or a
/// transient failure outlasted the retries (the caller fails only once they are used up).
fn fails_over(class: ErrorClass) -> bool {
    class == ErrorClass::Transient || switches_off(class)
}

/// The stored word of an error class (`unauthorized`), for the failover's reason.
fn class_name(class: ErrorClass) -> String {
    serde_json::to_value(class).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Why a job's model cannot run now, for the failover's reason.
fn switched_off_reason(inner: &Inner, job: &JobRecord) -> String {
    let catalog = &inner.catalog;
    let model =
        catalog.disabled_reason(&Switch::Model(job.model_id.clone())).map(|r| format!("model switched off: {r}"));
    let provider = catalog
        .disabled_reason(&Switch::Provider(job.provider_id.clone()))
        .map(|r| format!("provider switched off: {r}"));
    model.or(provider).unwrap_or_else(|| "model disabled in the config".into()).chars().take(300).collect()
}

/// Moves a job that its model cannot run to the model's first usable fallback (same task,
/// takes its photos; the options the fallback declares keep their choice, the rest take the
/// fallback's first value). A job moves at most once. In one write transaction with the job:
///
/// - fallback price ≤ the hold → the difference goes back (one `HoldAdjust` row), the job is
///   queued again on the fallback and the scheduler starts it under that provider's limits;
/// - pricier → nothing moves yet: the job waits `AwaitingConfirmation` and its owner is asked
///   ([`answer`] takes the reply; the scheduler expires an unanswered question).
///
/// A request the old provider still has is cancelled there (best effort). `Err` gives the job
/// back untouched when there is no fallback (or the move could not be stored): fail it as
/// before. `Ok` also when the stored job turned terminal meanwhile (a cancel): nothing to do.
async fn failover(inner: &Arc<Inner>, job: JobRecord, why: String) -> Result<(), JobRecord> {
    let JobPayload::Generate { inputs, options, .. } = &job.payload else { return Err(job) };
    if job.failover.is_some() || job.hold_id.is_none() || job.settlement.is_some() {
        return Err(job);
    }
    let Some(to) = inner.catalog.fallback_for(&job.model_id, inputs.len()) else { return Err(job) };
    let kept: crate::config::Choices = options
        .iter()
        .filter(|(name, i)| to.options.iter().any(|o| o.name == **name && usize::from(**i) < o.values.len()))
        .map(|(name, i)| (name.clone(), *i))
        .collect();
    let Some(to_price) = inner.catalog.quote(&to.id, &kept) else { return Err(job) };
    let asking = to_price > job.price;
    let mut moved = job.clone();
    moved.failover = Some(crate::store::records::Failover {
        from_model: job.model_id.clone(),
        from_provider: job.provider_id.clone(),
        from_price: job.price,
        to_model: to.id.clone(),
        to_price,
        reason: why,
        at: now_ms(),
        confirmed: (!asking).then_some(true),
        asked: false,
    });
    if let JobPayload::Generate { options, .. } = &mut moved.payload {
        *options = kept;
    }
    moved.model_id = to.id.clone();
    moved.provider_id = to.provider.clone();
    moved.status = if asking { JobStatus::AwaitingConfirmation } else { JobStatus::Queued };
    // A fresh start on the fallback: nothing of the old provider's request carries over, and
    // the prompt's translation is decided again for the new model.
    moved.submission = None;
    moved.preassigned_id = None;
    moved.attempts = 0;
    moved.started_at = None;
    moved.submitted_at = None;
    moved.translation = None;
    moved.error = None;
    let m = moved.clone();
    let saved = inner
        .store
        .write(move |tx| {
            let mut m = m;
            match tx.get_job(m.id)? {
                Some(s) if s.status.is_terminal() || s.failover.is_some() => return Ok(None),
                _ => {}
            }
            if !asking {
                crate::billing::adjust_hold(tx, &mut m, to_price)?;
            }
            tx.put_job(&m)?;
            Ok::<_, super::JobsError>(Some(m))
        })
        .await;
    let moved = match saved {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::error!(error = %e, "could not move the job to its fallback");
            return Err(job);
        }
    };
    if let (Some(sub), Some(p)) = (&job.submission, inner.providers.get(&job.provider_id)) {
        if let Err(e) = p.cancel(sub).await {
            tracing::debug!(error = %e, "the abandoned request could not be cancelled");
        }
    }
    tracing::warn!(from = %job.model_id, to = %moved.model_id, price = %to_price, asking, "job moved to a fallback model");
    if asking {
        ask(inner, moved).await;
    } else {
        inner.wake.notify_one();
    }
    Ok(())
}

/// Asks the owner of a job awaiting confirmation whether to run it on the pricier fallback,
/// then records that the question went out (a failed send is not retried: the answer times
/// out like an unanswered one).
pub(crate) async fn ask(inner: &Arc<Inner>, job: JobRecord) {
    if let Err(e) = inner.notifier.ask_failover(&job).await {
        tracing::warn!(error = %e, "the failover question was not delivered");
    }
    let id = job.id;
    let marked = inner
        .store
        .write(move |tx| {
            if let Some(mut j) = tx.get_job(id)? {
                if let (JobStatus::AwaitingConfirmation, Some(f)) = (j.status, j.failover.as_mut()) {
                    f.asked = true;
                    tx.put_job(&j)?;
                }
            }
            Ok::<_, StoreError>(())
        })
        .await;
    if let Err(e) = marked {
        tracing::error!(error = %e, "could not record the failover question");
    }
}

/// What became of an owner's answer to a failover question ([`answer`]).
#[derive(Debug, Clone, PartialEq)]
pub enum FailoverAnswer {
    /// Yes, and the difference is held: the job runs on the fallback (its id).
    Running { model: String },
    /// No: the hold is released and the user told.
    Declined,
    /// Yes, but the balance cannot cover the difference: released and told.
    NoFunds,
    /// The question was answered already (or expired, or the job was cancelled).
    AlreadyAnswered,
    /// No such job of this user.
    NotFound,
}

/// Takes `user`'s answer to job `id`'s failover question, once: in one write transaction the
/// job is still `AwaitingConfirmation` and theirs, then yes → the difference held (one
/// `HoldAdjust` row) and the job queued on the fallback; no, or a balance too low for the
/// difference → the hold released and the job failed (the user is told). With
/// `user = None` the answer is the scheduler's expiry of an unanswered question (a no).
pub(crate) async fn answer(
    inner: &Arc<Inner>,
    user: Option<crate::domain::UserId>,
    id: crate::domain::JobId,
    yes: bool,
) -> Result<FailoverAnswer, super::JobsError> {
    let answer_secs = inner.cfg.failover_answer_secs;
    let out = inner
        .store
        .write(move |tx| {
            let Some(mut j) = tx.get_job(id)? else { return Ok((FailoverAnswer::NotFound, None)) };
            if user.is_some_and(|u| u != j.user_id) {
                return Ok((FailoverAnswer::NotFound, None));
            }
            let Some(mut f) = j.failover.clone().filter(|_| j.status == JobStatus::AwaitingConfirmation) else {
                return Ok((FailoverAnswer::AlreadyAnswered, None));
            };
            let now = now_ms();
            if yes {
                match crate::billing::adjust_hold(tx, &mut j, f.to_price) {
                    Ok(_) => {
                        f.confirmed = Some(true);
                        j.failover = Some(f);
                        j.status = JobStatus::Queued;
                        tx.put_job(&j)?;
                        return Ok((FailoverAnswer::Running { model: j.model_id.clone() }, None));
                    }
                    Err(crate::billing::BillingError::InsufficientFunds { balance, price }) => {
                        f.confirmed = Some(true);
                        j.error = Some(JobError {
                            class: ErrorClass::InsufficientFunds,
                            detail: format!("the fallback needs {price} more; the balance is {balance}"),
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                let detail = match user {
                    Some(_) => "the user declined the pricier fallback".to_string(),
                    None => format!("no answer to the fallback question within {answer_secs} s"),
                };
                f.confirmed = user.map(|_| false);
                j.error = Some(JobError { class: ErrorClass::Declined, detail });
            }
            j.failover = Some(f);
            j.status = JobStatus::Failed;
            j.finished_at = Some(now);
            crate::billing::release(tx, &mut j)?;
            tx.put_job(&j)?;
            let outcome = if yes { FailoverAnswer::NoFunds } else { FailoverAnswer::Declined };
            Ok::<_, super::JobsError>((outcome, Some(j)))
        })
        .await?;
    match out {
        (FailoverAnswer::Running { model }, _) => {
            inner.wake.notify_one();
            Ok(FailoverAnswer::Running { model })
        }
        (outcome, Some(j)) => {
            finish_message(inner, j).await;
            Ok(outcome)
        }
        (outcome, None) => Ok(outcome),
    }
}

/// Classes after which the model (or its provider) is switched off for everyone, so the
/// user is offered the other models of the same task.
fn switches_off(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::Retired | ErrorClass::Unauthorized | ErrorClass::PaymentRequired | ErrorClass::Misconfigured
    )
}

/// A retired, unpaid or misconfigured model, or a provider that refuses our key, stays broken
/// for every user: switch it off at runtime (persisted) and tell the admins once, when it flips.
async fn disable_if_needed(inner: &Arc<Inner>, job: &JobRecord) {
    let Some(err) = &job.error else { return };
    let model = |what: String| (Switch::Model(job.model_id.clone()), what);
    let (switch, what) = match err.class {
        ErrorClass::Retired => model(format!("Model «{}» was retired by its provider", job.model_id)),
        ErrorClass::PaymentRequired => model(format!(
            "Model «{}» needs a payment at provider «{}» (HTTP 402); its other models keep running",
            job.model_id, job.provider_id
        )),
        ErrorClass::Misconfigured => model(format!(
            "Model «{}» is misconfigured: provider «{}» refuses it (workflow, gated model…)",
            job.model_id, job.provider_id
        )),
        ErrorClass::Unauthorized => (
            Switch::Provider(job.provider_id.clone()),
            format!("Provider «{}» refuses requests (key, balance or region)", job.provider_id),
        ),
        _ => return,
    };
    let flipped = match inner.catalog.disable(switch, err.detail.clone()).await {
        Ok(flipped) => flipped,
        Err(e) => {
            // Still tell the admins: the model keeps failing until someone looks.
            tracing::error!(error = %e, "could not store the switch-off");
            true
        }
    };
    if flipped {
        tracing::error!(%what, detail = %err.detail, "disabled at runtime");
        inner.notifier.admin_alert(&format!("⚠️ {what}; it is disabled until you fix it.\n{}", err.detail)).await;
    }
}

/// Sends the final message of a terminal job whose delivery is still pending (also used on
/// restart). Marks the delivery attempted first so it is never sent twice.
async fn finish_message(inner: &Arc<Inner>, job: JobRecord) {
    if job.delivery == Delivery::Attempted {
        return interrupted(inner, job).await;
    }
    if job.delivery != Delivery::Pending {
        return;
    }
    if let (JobStatus::Succeeded, JobPayload::WritePrompt { written: Some(text), .. }) = (job.status, &job.payload) {
        let text = text.clone();
        let mut j = job;
        j.delivery = Delivery::Attempted;
        if save(inner, &j).await.is_err() {
            return;
        }
        let d =
            if inner.notifier.deliver_text(&j, &text).await.is_ok() { Delivery::Delivered } else { Delivery::Failed };
        return mark_delivery(inner, j, d).await;
    }
    if job.status == JobStatus::Succeeded {
        let item_id = job.result;
        let item = match item_id {
            Some(id) => inner.store.read(move |rx| rx.get_library_item(id)).await.ok().flatten(),
            None => None,
        };
        let Some(item) = item else {
            tracing::error!("succeeded job without a library item");
            return mark_delivery(inner, job, Delivery::Failed).await;
        };
        let path = inner.store.media_path(&item.sha256, &item.ext);
        match tokio::fs::read(&path).await {
            Ok(bytes) => deliver(inner, job, item, bytes).await,
            Err(e) => {
                tracing::error!(error = %e, "result file missing");
                mark_delivery(inner, job, Delivery::Failed).await
            }
        }
    } else {
        let mut j = job;
        j.delivery = Delivery::Attempted;
        if save(inner, &j).await.is_err() {
            return;
        }
        let model = inner.catalog.model(&j.model_id);
        let alternatives = match (&j.error, model) {
            (Some(e), Some(m)) if switches_off(e.class) => inner.catalog.alternatives(m.task, &m.id),
            _ => vec![],
        };
        let outcome = inner.notifier.failed(&j, &alternatives).await;
        let d = if outcome.is_ok() { Delivery::Delivered } else { Delivery::Failed };
        mark_delivery(inner, j, d).await;
    }
}

/// A send that a crash cut off (found `Attempted` at start). A result is not sent again
/// unasked — it may have arrived — the user is told and gets a button instead; a failure
/// notice is plain text, so it is simply sent (a rare duplicate beats a silent refund).
async fn interrupted(inner: &Arc<Inner>, mut job: JobRecord) {
    if job.status != JobStatus::Succeeded || matches!(job.payload, JobPayload::WritePrompt { .. }) {
        job.delivery = Delivery::Pending;
        return Box::pin(finish_message(inner, job)).await;
    }
    let item = match job.result {
        Some(id) => inner.store.read(move |rx| rx.get_library_item(id)).await.ok().flatten(),
        None => None,
    };
    let Some(item) = item else {
        return mark_delivery(inner, job, Delivery::Failed).await;
    };
    if item.photo_file_id.is_some() || (item.media != MediaKind::Image && item.document_file_id.is_some()) {
        // The photo (or the file itself) arrived; at most an image's document was cut off.
        return mark_delivery(inner, job, Delivery::Delivered).await;
    }
    tracing::warn!(job = %job.id, "result delivery was cut off by a restart; offering to resend");
    let d = match inner.notifier.delivery_interrupted(&job, &item).await {
        Ok(()) => Delivery::Interrupted,
        Err(_) => Delivery::Failed,
    };
    mark_delivery(inner, job, d).await;
}

async fn mark_delivery(inner: &Arc<Inner>, mut job: JobRecord, d: Delivery) {
    job.delivery = d;
    if let Err(e) = save(inner, &job).await {
        tracing::error!(error = %e, "could not record delivery state");
    }
}

/// What to send for a stored result of kind `media`: for a picture, the photo (fitted for
/// sendPhoto; `None` if it cannot be one) and the document form; other kinds as they are.
/// Prepared off the async runtime.
pub(crate) async fn prepare_files(inner: &Inner, item: &LibraryItem, bytes: Vec<u8>) -> Result<ResultFiles, String> {
    let media = item.media;
    if bytes.len() > MAX_RESULT_BYTES {
        return super::media::link(inner, item.id, bytes.len() as u64)
            .ok_or_else(|| format!("{} bytes, more than Telegram takes", bytes.len()));
    }
    // An MP4 has no pure-Rust decoder for a thumbnail: the job's input photo stands in.
    let photo = match media {
        MediaKind::Video => super::media::input_photo(inner, item).await,
        _ => None,
    };
    let limits = inner.limits.clone();
    tokio::task::spawn_blocking(move || -> Result<ResultFiles, String> {
        let ext = MediaKind::sniff(&bytes).2;
        let name = format!("mediabot.{ext}");
        Ok(match media {
            MediaKind::Image => {
                let photo = crate::imaging::fit_for_telegram_photo(&bytes, &limits).ok();
                let (document, ext, _) = crate::imaging::document_form(&bytes).map_err(|e| e.to_string())?;
                ResultFiles::Image { photo, document, name: format!("mediabot.{ext}") }
            }
            MediaKind::Video => {
                let video = super::media::facts(&bytes, photo.as_deref(), &limits);
                ResultFiles::Video { bytes, name, video }
            }
            MediaKind::Animation => {
                let video = super::media::facts(&bytes, None, &limits);
                ResultFiles::Animation { bytes, name, video }
            }
            MediaKind::File => ResultFiles::File { bytes, name },
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn deliver(inner: &Arc<Inner>, mut job: JobRecord, item: LibraryItem, bytes: Vec<u8>) {
    let files = match prepare_files(inner, &item, bytes).await {
        Ok(f) => f,
        other => {
            tracing::error!(?other, "could not prepare the result for Telegram");
            return mark_delivery(inner, job, Delivery::Failed).await;
        }
    };
    inner.notifier.before_delivery(&job).await;
    job.delivery = Delivery::Attempted;
    if save(inner, &job).await.is_err() {
        return;
    }
    let (photo_tx, photo_rx) = tokio::sync::oneshot::channel::<String>();
    let record_photo = {
        let (id, media) = (item.id, item.media);
        async move {
            // Once this is stored a restart knows the user has the result (no resend notice).
            if let Ok(file_id) = photo_rx.await {
                let ids = if media == MediaKind::Image { (Some(file_id), None) } else { (None, Some(file_id)) };
                if let Err(e) = inner.store.write(move |tx| tx.set_library_file_ids(id, ids.0, ids.1)).await {
                    tracing::error!(error = %e, "could not record the sent photo");
                }
            }
        }
    };
    let (sent, ()) = tokio::join!(inner.notifier.deliver(&job, &item, files, photo_tx), record_photo);
    match sent {
        Ok(ids) => {
            job.delivery = Delivery::Delivered;
            let (j, id) = (job, item.id);
            if let Err(e) = inner
                .store
                .write(move |tx| {
                    tx.set_library_file_ids(id, ids.photo_file_id, ids.document_file_id)?;
                    tx.put_job(&j)
                })
                .await
            {
                tracing::error!(error = %e, "could not record delivery");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "delivery failed; the result stays in the library");
            if matches!(e, super::NotifyError::Blocked) {
                let user = job.user_id;
                let _ = inner
                    .store
                    .write(move |tx| {
                        if let Some(mut u) = tx.get_user(user)? {
                            u.blocked = true;
                            tx.put_user(&u)?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await;
            }
            mark_delivery(inner, job, Delivery::Failed).await
        }
    }
}

async fn notify_progress(inner: &Arc<Inner>, job: &JobRecord, p: JobProgress) {
    inner.notifier.progress(job, p).await;
}
