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

/// What a job is for. Later modes (edit, upscale, face swap, video…) add variants here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    TextToImage,
    Edit,
    Upscale,
    ImageToVideo,
}

/// Provider id of jobs that run in this process (the built-in tools); no `[[providers]]` entry
/// may use it.
pub const LOCAL_PROVIDER: &str = "local";
/// Model id of "📝 Add text" jobs (ledger, stats, admin panel); no `[[models]]` entry may use it.
pub const ADD_TEXT_MODEL: &str = "add-text";
/// Model id of "🔍 Resize" jobs (2×/4× enlargement of a library item); reserved like [`ADD_TEXT_MODEL`].
pub const RESIZE_MODEL: &str = "resize";

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Submitting,
    Submitted,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order (for dashboards and metrics).
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn format_from_dims() {
        assert_eq!(Format::from_dims(1344, 768), Format::Horizontal);
        assert_eq!(Format::from_dims(768, 1344), Format::Vertical);
        assert_eq!(Format::from_dims(1000, 1050), Format::Square);
    }
}
