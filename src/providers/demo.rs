//! Demo provider: renders the prompt locally. Only `sandbox` uses it.
//!
//! Stateless across restarts: everything `wait` needs travels in [`Submission::data`], so a
//! submission restored from the database renders the same picture.

use super::{GenerateRequest, GeneratedFile, ImageProvider, ProgressFn, ProviderError, ProviderProgress, Submission};
use crate::domain::Task;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Progress fractions reported by `wait`, with one `step_delay` before each.
const STEPS: [f32; 4] = [0.25, 0.5, 0.75, 1.0];

/// What a demo submission stores; the shape of [`Submission::data`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DemoJob {
    prompt: String,
    width: u32,
    height: u32,
    seed: u64,
    /// Absent in submissions stored before the photo tools: text to image.
    #[serde(default)]
    cutout: bool,
    /// A video task's clip: (frames, fps); absent for pictures.
    #[serde(default)]
    clip: Option<(u32, u32)>,
}

/// A video request's demo clip: its size scaled down to at most
/// [`crate::imaging::video::DEMO_MAX_SIDE`] on the long side (even, ≥ 32), and (frames, fps)
/// keeping the requested duration with at most [`crate::imaging::video::DEMO_MAX_FRAMES`]
/// frames (a 15 s clip plays at 1 fps): the sandbox shows a clip of the length the user chose
/// without encoding hundreds of uncompressed frames.
fn demo_clip(req: &GenerateRequest) -> ((u32, u32), (u32, u32)) {
    use crate::imaging::video::{DEMO_MAX_FRAMES, DEMO_MAX_SIDE};
    let (w, h) = (req.width.max(1), req.height.max(1));
    let k = (f64::from(DEMO_MAX_SIDE) / f64::from(w.max(h))).min(1.0);
    let side = |v: u32| ((f64::from(v) * k).round() as u32).clamp(32, DEMO_MAX_SIDE) & !1;
    let params = req
        .video
        .unwrap_or(super::VideoParams { duration_secs: super::DEFAULT_DURATION_SECS, fps: super::DEFAULT_FPS });
    let duration = params.duration_secs.max(1);
    let fps = params.fps.clamp(1, (DEMO_MAX_FRAMES / duration).max(1));
    let frames = duration.saturating_mul(fps).min(DEMO_MAX_FRAMES);
    ((side(w), side(h)), (frames, fps))
}

/// The text a demo picture shows: the prompt, or for a tool without one what it stands for
/// (the picture is labelled "DEMO" either way).
fn demo_text(req: &GenerateRequest) -> String {
    let tool = match req.task {
        Task::TextToImage => return req.prompt.clone(),
        Task::Edit => "edit",
        Task::Upscale => "upscale ×2",
        Task::ImageToVideo | Task::TextToVideo => "video",
        Task::RemoveBackground => "background removed",
        Task::Retouch => "retouch",
        Task::FaceSwap => "face swap",
        Task::Variations => "variation",
        Task::StyleTransfer => "style transfer",
        Task::Sketch => "sketch",
        Task::Reference => "from references",
    };
    let photos = req.input_images.len();
    match req.prompt.trim() {
        "" => format!("{tool} · {photos} 📷"),
        p => format!("{tool} · {photos} 📷 · {p}"),
    }
}

/// The demo picture's size: the request's, or for a tool the first photo's (doubled to
/// upscale), within what the renderer draws.
fn demo_size(req: &GenerateRequest) -> (u32, u32) {
    let first = req.input_images.first().and_then(|i| crate::imaging::probe(&i.bytes).ok());
    match (req.task.keeps_size(), first) {
        (true, Some(info)) => {
            // Twice the size to upscale, within the renderer's 2048 px and the same shape.
            let side = info.width.max(info.height).max(1) as f64;
            let k = if req.task == Task::Upscale { 2.0_f64.min(2048.0 / side) } else { 1.0_f64.min(2048.0 / side) };
            ((info.width as f64 * k).round() as u32, (info.height as f64 * k).round() as u32)
        }
        _ => (req.width, req.height),
    }
}

/// A provider that pretends to generate: it reports a few progress steps, then returns
/// [`crate::imaging::render_demo`] output as PNG with `is_demo: true`.
pub struct DemoProvider {
    #[allow(dead_code, reason = "the provider id from config, for logs and tests")]
    id: String,
    step_delay: Duration,
}

impl DemoProvider {
    /// `id` is the provider id from config; `step_delay` is slept before each of the four
    /// progress reports (zero in tests).
    pub fn new(id: &str, step_delay: Duration) -> DemoProvider {
        DemoProvider { id: id.to_string(), step_delay }
    }
}

#[async_trait::async_trait]
impl ImageProvider for DemoProvider {
    fn id(&self) -> &str {
        &self.id
    }

    async fn submit(&self, req: &GenerateRequest, preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        let (width, height) = demo_size(req);
        let cutout = req.task == Task::RemoveBackground;
        let mut job = DemoJob { prompt: demo_text(req), width, height, seed: req.seed, cutout, clip: None };
        if req.task.is_video() {
            let ((w, h), clip) = demo_clip(req);
            (job.width, job.height, job.clip) = (w, h, Some(clip));
        }
        let data = serde_json::to_value(&job).map_err(|e| ProviderError::Failed(format!("demo submission: {e}")))?;
        Ok(Submission {
            request_id: preassigned.map(str::to_string).unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            data,
        })
    }

    async fn is_known(&self, _request_id: &str, _data: &serde_json::Value) -> Result<bool, ProviderError> {
        // Nothing is held remotely: a stored submission is always enough to finish.
        Ok(true)
    }

    async fn wait(&self, sub: &Submission, progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        let job: DemoJob = serde_json::from_value(sub.data.clone())
            .map_err(|e| ProviderError::Failed(format!("demo submission {} unreadable: {e}", sub.request_id)))?;
        for fraction in STEPS {
            tokio::time::sleep(self.step_delay).await;
            progress(ProviderProgress { fraction: Some(fraction), queue_position: None, running: true });
        }
        let mime = if job.clip.is_some() { "video/mp4" } else { "image/png" };
        let bytes = tokio::task::spawn_blocking(move || {
            if let Some((frames, fps)) = job.clip {
                return crate::imaging::video::demo_video(&job.prompt, job.width, job.height, frames, fps, job.seed);
            }
            let render = if job.cutout { crate::imaging::render_demo_cutout } else { crate::imaging::render_demo };
            render(&job.prompt, job.width, job.height, job.seed)
        })
        .await
        .map_err(|e| ProviderError::Failed(format!("demo renderer panicked: {e}")))?
        .map_err(|e| ProviderError::Failed(format!("demo renderer: {e}")))?;
        Ok(vec![GeneratedFile { bytes, mime: mime.into(), is_demo: true }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Format;
    use crate::providers::SizeParam;
    use std::sync::Mutex;

    fn request(prompt: &str, width: u32, height: u32) -> GenerateRequest {
        GenerateRequest {
            model_id: "demo".into(),
            task: Task::TextToImage,
            endpoint: String::new(),
            workflow: None,
            prompt: prompt.into(),
            negative: None,
            format: Format::Vertical,
            width,
            height,
            aspect_ratio: None,
            seed: 1234,
            size_param: SizeParam::ImageSize,
            extra: serde_json::Map::new(),
            input_images: Vec::new(),
            image_fields: vec![],
            video: None,
        }
    }

    #[tokio::test]
    async fn submit_survives_serialization_and_renders() {
        let provider = DemoProvider::new("demo", Duration::from_millis(1));
        assert_eq!(provider.id(), "demo");
        let sub = provider.submit(&request("Кот в космосе, oil painting", 768, 1344), None).await.expect("submit");
        assert!(uuid::Uuid::parse_str(&sub.request_id).is_ok());

        // The job engine stores the submission and a restarted process waits on the copy.
        let stored = serde_json::to_string(&sub).expect("serialize");
        let restored: Submission = serde_json::from_str(&stored).expect("deserialize");
        assert_eq!(restored, sub);

        let fresh = DemoProvider::new("demo", Duration::ZERO);
        let reports = Mutex::new(Vec::new());
        let record = |p: ProviderProgress| reports.lock().expect("lock").push(p);
        let images = fresh.wait(&restored, &record).await.expect("wait");

        let fractions: Vec<_> = reports.into_inner().expect("lock").iter().map(|p| p.fraction).collect();
        assert_eq!(fractions, [Some(0.25), Some(0.5), Some(0.75), Some(1.0)]);

        assert_eq!(images.len(), 1);
        let image = &images[0];
        assert!(image.is_demo);
        assert_eq!(image.mime, "image/png");
        assert_eq!(crate::providers::sniff_mime(&image.bytes), "image/png");
        let info = crate::imaging::probe(&image.bytes).expect("probe");
        assert_eq!((info.width, info.height, info.mime), (768, 1344, "image/png"));
    }

    #[tokio::test]
    async fn a_video_request_gets_a_real_short_mp4() {
        let provider = DemoProvider::new("demo", Duration::ZERO);
        let mut req = request("a cat walking", 832, 464);
        req.task = Task::ImageToVideo;
        req.video = Some(crate::providers::VideoParams { duration_secs: 10, fps: 16 });
        let sub = provider.submit(&req, None).await.expect("submit");
        let files = provider.wait(&sub, &|_| {}).await.expect("wait");
        let file = &files[0];
        assert!(file.is_demo);
        assert_eq!(file.mime, "video/mp4");
        assert_eq!(&file.bytes[4..8], b"ftyp");
        assert_eq!(crate::domain::MediaKind::sniff(&file.bytes).0, crate::domain::MediaKind::Video);
        assert!(crate::imaging::video::is_faststart(&file.bytes));
        // 832×464 scaled to 256 on the long side (even); 10 s kept at 2 fps (20 frames).
        let meta = crate::imaging::video::probe(&file.bytes).expect("probe");
        assert_eq!((meta.width, meta.height, meta.duration_secs), (256, 142, 10));

        req.task = Task::TextToVideo;
        req.video = Some(crate::providers::VideoParams { duration_secs: 5, fps: 16 });
        let sub = provider.submit(&req, None).await.expect("submit");
        let meta = crate::imaging::video::probe(&provider.wait(&sub, &|_| {}).await.expect("wait")[0].bytes);
        assert_eq!(meta.map(|m| m.duration_secs), Some(5));
    }

    #[tokio::test]
    async fn preassigned_id_is_kept_and_bad_data_fails() {
        let provider = DemoProvider::new("demo", Duration::ZERO);
        let sub = provider.submit(&request("x", 64, 64), Some("fixed-id")).await.expect("submit");
        assert_eq!(sub.request_id, "fixed-id");

        let broken = Submission { request_id: "r".into(), data: serde_json::json!({"prompt": 5}) };
        let err = provider.wait(&broken, &|_| {}).await.expect_err("bad data");
        assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    }
}
