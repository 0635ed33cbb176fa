//! Shared words of the appliance: ids, money, job states and formats. No I/O here.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Telegram user id (`User.id` in the Bot API; fits in 52 bits, kept as `i64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub i64);

/// A job id: UUIDv7 as `u128`, so the natural key order of the jobs table is FIFO by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u128);

/// A ledger operation id: UUIDv7 as `u128` (time ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(pub u128);

/// A library item id: UUIDv7 as `u128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(pub u128);

macro_rules! uuid_id {
    ($t:ident) => {
        #[allow(dead_code, reason = "each id type gets the same helpers; not every type uses every one")]
        impl $t {
            /// A new time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7().as_u128())
            }
            /// Short, URL- and callback-safe text form (lowercase base-36).
            pub fn short(&self) -> String {
                base36(self.0)
            }
            /// Parses [`Self::short`].
            pub fn from_short(s: &str) -> Option<Self> {
                u128::from_str_radix(s, 36).ok().map(Self)
            }
        }
        impl Default for $t {
            fn default() -> Self {
                Self::new()
            }
        }
        // Stored as the UUID string: JSON numbers cannot hold 128 bits.
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&uuid::Uuid::from_u128(self.0))
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                uuid::Uuid::parse_str(&s).map(|u| Self(u.as_u128())).map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", uuid::Uuid::from_u128(self.0))
            }
        }
    };
}
uuid_id!(JobId);
uuid_id!(OperationId);
uuid_id!(ImageId);

fn base36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::with_capacity(25);
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// An amount of the bot's internal currency. Integer only: credits are never fractional,
/// and every arithmetic step is checked so an overflow is an error, not a wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credits(pub i64);

impl Credits {
    pub const ZERO: Credits = Credits(0);
    pub fn checked_add(self, o: Credits) -> Option<Credits> {
        self.0.checked_add(o.0).map(Credits)
    }
    pub fn checked_sub(self, o: Credits) -> Option<Credits> {
        self.0.checked_sub(o.0).map(Credits)
    }
    pub fn checked_neg(self) -> Option<Credits> {
        self.0.checked_neg().map(Credits)
    }
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a job is for: the model's `task` in config (`text_to_image`, `edit`, `upscale`, …).
/// Each task has its inputs ([`Task::slots`]), whether it takes an instruction
/// ([`Task::instruction`]) and a bot flow that asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    TextToImage,
    Edit,
    /// AI enlargement (fal `fal-ai/recraft/upscale/crisp`, `fal-ai/esrgan`): one photo, no text.
    Upscale,
    /// Photo → video (fal Kling / Wan / Seedance image-to-video, a ComfyUI video workflow,
    /// ComfyUI-Connect): one photo, an optional motion prompt, the declared options (duration,
    /// quality…).
    ImageToVideo,
    /// Text → video: a prompt and the declared options, no photo.
    TextToVideo,
    /// Background removal (fal `fal-ai/birefnet`): one photo → a PNG with alpha.
    RemoveBackground,
    /// Skin retouch (fal `fal-ai/retoucher`), or an edit model with a fixed instruction
    /// (`instruction` in config); the user may add to it.
    Retouch,
    /// Face swap: the face first, then the photo whose face is replaced (fal `fal-ai/face-swap`,
    /// WaveSpeed `wavespeed-ai/image-face-swap`).
    FaceSwap,
    /// Variations of one photo.
    Variations,
    /// The content photo redrawn in the style photo's style.
    StyleTransfer,
    /// A sketch or drawing made into a picture, with a description.
    Sketch,
    /// A new picture of what 1–4 reference photos show (Imagen-custom style): the user picks
    /// the [`Subject`] type, sends the photos, and writes a prompt where `[1]`…`[4]` name them.
    Reference,
}

/// What the photos of a [`Task::Reference`] job show. It reaches the provider as a short
/// English phrase leading the prompt ([`Subject::phrase`]): the edit endpoints these models
/// run on (fal `nano-banana/edit`, `seedream/edit`) have no subject-type field, and a phrase
/// works on every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Person,
    Animal,
    Product,
    Default,
}

impl Subject {
    pub const ALL: [Subject; 4] = [Subject::Person, Subject::Animal, Subject::Product, Subject::Default];

    /// The stored and callback word (`person`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Person => "person",
            Subject::Animal => "animal",
            Subject::Product => "product",
            Subject::Default => "default",
        }
    }

    /// Parses [`Subject::as_str`].
    pub fn parse(s: &str) -> Option<Subject> {
        Subject::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The sentence put before the user's prompt: what the references show, and what the
    /// `[n]` markers mean.
    pub fn phrase(self) -> &'static str {
        match self {
            Subject::Person => "Reference images show a person; keep their identity.",
            Subject::Animal => "Reference images show an animal; keep its look.",
            Subject::Product => "Reference images show a product; keep its design.",
            Subject::Default => "Reference images show the subject; keep its look.",
        }
    }

    /// The prompt sent to the provider: [`Subject::phrase`], the marker legend, then the
    /// user's words.
    pub fn prompt(self, own: &str) -> String {
        format!("{} [n] is reference image n. {own}", self.phrase())
    }
}

/// The `[n]` markers of a reference prompt, in order of appearance (`[1]`…`[9]`, and any
/// bracketed whole number; other brackets are text).
pub fn reference_markers(prompt: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut rest = prompt;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inner = &rest[..close];
        if !inner.is_empty() && inner.chars().all(|c| c.is_ascii_digit()) {
            out.push(inner.parse().unwrap_or(u32::MAX));
        }
    }
    out
}

/// Whether a task's job takes a text from the user besides its photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    /// Never asked (upscale, remove background, face swap, variations).
    None,
    /// Asked, with "Skip" (retouch, style transfer).
    Optional,
    /// Needed: the job is made of it (create, edit, sketch).
    Required,
}

/// What one input photo of a task is; the bot asks for each by its role, in this order, and
/// providers send each under its field (`image_fields` in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Any photo (edit, upscale…).
    Photo,
    /// The face to put in (face swap, first).
    Face,
    /// The photo whose face is replaced (face swap, second).
    Target,
    /// The photo whose content is kept (style transfer, first).
    Content,
    /// The photo whose style is taken (style transfer, second).
    Style,
}

impl Slot {
    /// The locale key of the request for this photo (`slot_face` …).
    pub fn key(self) -> &'static str {
        match self {
            Slot::Photo => "slot_photo",
            Slot::Face => "slot_face",
            Slot::Target => "slot_target",
            Slot::Content => "slot_content",
            Slot::Style => "slot_style",
        }
    }
}

impl Task {
    /// Tasks a bot flow serves today: a model with any other task could never be reached by a
    /// user, so `check-config` refuses it (`bot::flows_cover_every_handled_task` keeps this list
    /// and the flows in step).
    pub const HANDLED: [Task; 12] = [
        Task::TextToImage,
        Task::ImageToVideo,
        Task::TextToVideo,
        Task::Edit,
        Task::Upscale,
        Task::RemoveBackground,
        Task::Retouch,
        Task::FaceSwap,
        Task::Variations,
        Task::StyleTransfer,
        Task::Sketch,
        Task::Reference,
    ];

    /// The photo tools, in menu order: one photo set (in [`Task::slots`] order) and, where
    /// [`Task::instruction`] says so, a text.
    pub const TOOLS: [Task; 8] = [
        Task::Upscale,
        Task::RemoveBackground,
        Task::Retouch,
        Task::FaceSwap,
        Task::Variations,
        Task::StyleTransfer,
        Task::Sketch,
        Task::Reference,
    ];

    /// The config word (`text_to_image`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Task::TextToImage => "text_to_image",
            Task::Edit => "edit",
            Task::Upscale => "upscale",
            Task::ImageToVideo => "image_to_video",
            Task::TextToVideo => "text_to_video",
            Task::RemoveBackground => "remove_background",
            Task::Retouch => "retouch",
            Task::FaceSwap => "face_swap",
            Task::Variations => "variations",
            Task::StyleTransfer => "style_transfer",
            Task::Sketch => "sketch",
            Task::Reference => "reference",
        }
    }

    /// Input images a model of this task takes unless it declares `images`: none to create,
    /// two for face swap and style transfer, one otherwise.
    pub fn default_images(self) -> (u8, u8) {
        match self {
            Task::TextToImage | Task::TextToVideo => (0, 0),
            Task::FaceSwap | Task::StyleTransfer => (2, 2),
            Task::Reference => (1, 4),
            _ => (1, 1),
        }
    }

    /// What the photos of this task are, in the order they are asked for and sent; `None`
    /// when they are interchangeable ([`Slot::Photo`] each).
    pub fn slots(self) -> Option<[Slot; 2]> {
        match self {
            Task::FaceSwap => Some([Slot::Face, Slot::Target]),
            Task::StyleTransfer => Some([Slot::Content, Slot::Style]),
            _ => None,
        }
    }

    /// The role of input photo number `index` (0-based).
    pub fn slot(self, index: usize) -> Slot {
        self.slots().and_then(|s| s.get(index).copied()).unwrap_or(Slot::Photo)
    }

    /// Whether the user gives a text besides the photos.
    pub fn instruction(self) -> Instruction {
        match self {
            Task::TextToImage | Task::Edit | Task::Sketch | Task::TextToVideo | Task::Reference => {
                Instruction::Required
            }
            // The motion prompt ("камера медленно приближается") is optional.
            Task::Retouch | Task::StyleTransfer | Task::ImageToVideo => Instruction::Optional,
            Task::Upscale | Task::RemoveBackground | Task::FaceSwap | Task::Variations => Instruction::None,
        }
    }

    /// Whether the result keeps the input's size (no format is asked): tools change a photo,
    /// they do not compose a new one.
    pub fn keeps_size(self) -> bool {
        !matches!(
            self,
            Task::TextToImage | Task::Edit | Task::Sketch | Task::ImageToVideo | Task::TextToVideo | Task::Reference
        )
    }

    /// Whether the result is a video (the 🎬 flows, a 900 s default timeout, video stats).
    pub fn is_video(self) -> bool {
        matches!(self, Task::ImageToVideo | Task::TextToVideo)
    }
}

/// Provider id of jobs that run in this process (the built-in tools); no `[[providers]]` entry
/// may use it.
pub const LOCAL_PROVIDER: &str = "local";
/// Model id of "📝 Add text" jobs (ledger, stats, admin panel); no `[[models]]` entry may use it.
pub const ADD_TEXT_MODEL: &str = "add-text";
/// Model id of "✍️ Write" jobs (a prompt written by the language model); reserved like
/// [`ADD_TEXT_MODEL`].
pub const WRITE_MODEL: &str = "write";
/// Provider id of "✍️ Write" jobs: the `[llm]` language model.
pub const LLM_PROVIDER: &str = "llm";
/// Model id of "🔍 Resize" jobs (2×/4× enlargement of a library item); reserved like [`ADD_TEXT_MODEL`].
pub const RESIZE_MODEL: &str = "resize";

/// Largest file the bot takes from Telegram, in bytes: the Bot API's `getFile` limit for
/// downloads from the cloud server (protocols.md §1.4). Also the imaging input limit, so a file
/// Telegram lets through is never refused later for its size alone.
pub const MAX_DOWNLOAD_BYTES: usize = 20 * 1024 * 1024;

/// Something an admin (or the engine, on a provider's verdict) can switch off at runtime.
/// Stored in the `disabled-1` table under [`Switch::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Switch {
    /// One `[[models]]` entry, by id.
    Model(String),
    /// A `[[providers]]` entry, by id: every model on it.
    Provider(String),
}

/// A runtime override of a config value, set in the admin panel. Stored in `settings-1`
/// under [`Setting::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Setting {
    /// Base price of a model, credits.
    Price(String),
    /// Jobs a provider runs at once.
    Concurrency(String),
}

impl Switch {
    /// Stored key: `model:<id>` or `provider:<id>` (the form rows written by earlier versions
    /// already have).
    pub fn key(&self) -> String {
        match self {
            Switch::Model(id) => format!("model:{id}"),
            Switch::Provider(id) => format!("provider:{id}"),
        }
    }
    /// Parses [`Switch::key`]; `None` for anything else.
    pub fn parse(key: &str) -> Option<Switch> {
        match key.split_once(':')? {
            ("model", id) => Some(Switch::Model(id.to_string())),
            ("provider", id) => Some(Switch::Provider(id.to_string())),
            _ => None,
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl Setting {
    /// Stored key: `price:<model id>` or `concurrency:<provider id>`.
    pub fn key(&self) -> String {
        match self {
            Setting::Price(id) => format!("price:{id}"),
            Setting::Concurrency(id) => format!("concurrency:{id}"),
        }
    }
    /// Parses [`Setting::key`]; `None` for anything else.
    pub fn parse(key: &str) -> Option<Setting> {
        match key.split_once(':')? {
            ("price", id) => Some(Setting::Price(id.to_string())),
            ("concurrency", id) => Some(Setting::Concurrency(id.to_string())),
            _ => None,
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// What kind of file a result is, decided from its bytes (never from what a provider
/// claims); each kind has its own Telegram delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A still picture we can decode (JPEG, PNG, WebP): sendPhoto (fitted) + sendDocument.
    #[default]
    Image,
    /// A GIF or an animated WebP: sendAnimation.
    Animation,
    /// An MP4 / QuickTime video (sendVideo) or a WebM video (sendDocument: Telegram clients
    /// play only MPEG-4 inline, api.json sendVideo).
    Video,
    /// Anything else (animated PNG, archives): sendDocument as is.
    File,
}

impl MediaKind {
    /// Sniffs `bytes`: (kind, MIME type, file extension). Magic numbers from the formats'
    /// specs: PNG signature (+ `acTL` before `IDAT` = animated), JPEG SOI, RIFF/WEBP (+ a VP8X
    /// animation flag), GIF8, ISO-BMFF `ftyp` (MP4/MOV), EBML (WebM; Matroska shares the magic
    /// and is sent the same way).
    pub fn sniff(bytes: &[u8]) -> (MediaKind, &'static str, &'static str) {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            return if png_is_animated(bytes) {
                (MediaKind::File, "image/apng", "png")
            } else {
                (MediaKind::Image, "image/png", "png")
            };
        }
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            return (MediaKind::Image, "image/jpeg", "jpg");
        }
        if bytes.len() > 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            // VP8X flags byte, bit 1 (0x02) = animation (WebP container spec).
            let animated = &bytes[12..16.min(bytes.len())] == b"VP8X" && bytes.get(20).is_some_and(|f| f & 0x02 != 0);
            return if animated {
                (MediaKind::Animation, "image/webp", "webp")
            } else {
                (MediaKind::Image, "image/webp", "webp")
            };
        }
        if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            return (MediaKind::Animation, "image/gif", "gif");
        }
        if bytes.len() > 12 && &bytes[4..8] == b"ftyp" {
            return if &bytes[8..12] == b"qt  " {
                (MediaKind::Video, "video/quicktime", "mov")
            } else {
                (MediaKind::Video, "video/mp4", "mp4")
            };
        }
        if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
            return (MediaKind::Video, "video/webm", "webm");
        }
        (MediaKind::File, "application/octet-stream", "bin")
    }
}

/// Whether a PNG has an `acTL` chunk before its first `IDAT` (APNG spec §4: animated).
fn png_is_animated(bytes: &[u8]) -> bool {
    let mut at = 8;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        match &head[4..8] {
            b"acTL" => return true,
            b"IDAT" | b"IEND" => return false,
            _ => at = at.saturating_add(12).saturating_add(len),
        }
    }
    false
}

/// Output framing the user picks under a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Vertical,
    Square,
    Horizontal,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Vertical, Format::Square, Format::Horizontal];
    /// Default pixel size for providers that take explicit sizes (multiples of 64, ~1 MP).
    pub fn default_size(self) -> (u32, u32) {
        match self {
            Format::Vertical => (768, 1344),
            Format::Square => (1024, 1024),
            Format::Horizontal => (1344, 768),
        }
    }
    /// Aspect ratio string for providers that take `aspect_ratio` (fal nano-banana, Gemini).
    pub fn aspect_ratio(self) -> &'static str {
        match self {
            Format::Vertical => "9:16",
            Format::Square => "1:1",
            Format::Horizontal => "16:9",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Vertical => "vertical",
            Format::Square => "square",
            Format::Horizontal => "horizontal",
        }
    }
    /// Best format for a free width/height request.
    pub fn from_dims(w: u32, h: u32) -> Format {
        if w * 10 > h * 11 {
            Format::Horizontal
        } else if h * 10 > w * 11 {
            Format::Vertical
        } else {
            Format::Square
        }
    }
}

/// Life of a job. Terminal states are `Succeeded`, `Failed`, `Cancelled`.
///
/// `Submitting` means a provider request id may already exist at the provider (chosen by us
/// and persisted before the call); `Submitted` means the provider accepted and its id is stored.
/// `AwaitingConfirmation`: the job's model could not run it and its fallback costs more than
/// the hold; nothing runs until the owner says yes (or no, or the answer times out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Submitting,
    Submitted,
    Succeeded,
    Failed,
    Cancelled,
    AwaitingConfirmation,
}

impl JobStatus {
    /// Every status, in lifecycle order (for dashboards and metrics).
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::AwaitingConfirmation,
        JobStatus::Submitting,
        JobStatus::Submitted,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// 32 random bytes as 64 hex characters: session tokens, CSRF tokens, generated secrets.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD` (UTC) of a time in ms since the epoch.
pub fn ymd(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn reference_markers_are_bracketed_numbers_in_order() {
        assert_eq!(reference_markers("[1] и [3] в кафе"), [1, 3]);
        assert_eq!(reference_markers("[5] на пляже [2]"), [5, 2]);
        assert_eq!(reference_markers("no markers [a] [] [ 1] [12"), Vec::<u32>::new());
        assert_eq!(reference_markers("[99999999999]"), [u32::MAX], "too big is still beyond any count");
        for s in Subject::ALL {
            assert_eq!(Subject::parse(s.as_str()), Some(s));
            assert!(s.prompt("[1] x").ends_with("[n] is reference image n. [1] x"));
        }
    }
    #[test]
    fn short_ids_round_trip() {
        let id = JobId::new();
        assert_eq!(JobId::from_short(&id.short()), Some(id));
        assert!(id.short().len() <= 25);
        assert_eq!(base36(0), "0");
    }
    #[test]
    fn ids_serialize_as_uuid_strings() {
        let id = JobId(u128::MAX - 5);
        let j = serde_json::to_value(id).expect("json");
        assert!(j.is_string());
        assert_eq!(serde_json::from_value::<JobId>(j).expect("back"), id);
    }

    #[test]
    fn credits_checked() {
        assert_eq!(Credits(i64::MAX).checked_add(Credits(1)), None);
        assert_eq!(Credits(5).checked_sub(Credits(7)), Some(Credits(-2)));
    }
    #[test]
    fn switch_and_setting_keys_round_trip_in_their_stored_form() {
        for (s, key) in [(Switch::Model("flux".into()), "model:flux"), (Switch::Provider("fal".into()), "provider:fal")]
        {
            assert_eq!(s.key(), key);
            assert_eq!(Switch::parse(key), Some(s));
        }
        for (s, key) in
            [(Setting::Price("flux".into()), "price:flux"), (Setting::Concurrency("fal".into()), "concurrency:fal")]
        {
            assert_eq!(s.key(), key);
            assert_eq!(Setting::parse(key), Some(s));
        }
        assert_eq!(Switch::parse("price:x"), None);
        assert_eq!(Setting::parse("nocolon"), None);
    }
    #[test]
    fn media_kinds_come_from_the_bytes() {
        let png = |chunks: &[&[u8; 4]]| {
            let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
            for c in chunks {
                b.extend_from_slice(&[0, 0, 0, 0]);
                b.extend_from_slice(*c);
                b.extend_from_slice(&[0; 4]);
            }
            b
        };
        assert_eq!(MediaKind::sniff(&png(&[b"IHDR", b"IDAT"])).0, MediaKind::Image);
        assert_eq!(MediaKind::sniff(&png(&[b"IHDR", b"acTL", b"IDAT"])).0, MediaKind::File, "APNG");
        assert_eq!(MediaKind::sniff(b"\0\0\0\x18ftypisom\0\0\x02\0").0, MediaKind::Video);
        assert_eq!(MediaKind::sniff(b"\0\0\0\x14ftypqt  \0\0\0\0").1, "video/quicktime");
        assert_eq!(MediaKind::sniff(b"GIF89a\x01\0\x01\0").0, MediaKind::Animation);
        assert_eq!(MediaKind::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).0, MediaKind::Image);
        assert_eq!(
            MediaKind::sniff(b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\x02\0\0\0").0,
            MediaKind::Animation,
            "animated WebP"
        );
        assert_eq!(MediaKind::sniff(b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0").0, MediaKind::Image);
        assert_eq!(MediaKind::sniff(&[0x1A, 0x45, 0xDF, 0xA3, 0x01]), (MediaKind::Video, "video/webm", "webm"));
        assert_eq!(MediaKind::sniff(b"%PDF-1.7").0, MediaKind::File);
        assert_eq!(MediaKind::sniff(b"").0, MediaKind::File);
    }
    #[test]
    fn format_from_dims() {
        assert_eq!(Format::from_dims(1344, 768), Format::Horizontal);
        assert_eq!(Format::from_dims(768, 1344), Format::Vertical);
        assert_eq!(Format::from_dims(1000, 1050), Format::Square);
    }
}
