//! Keyboards as pure functions, and the callback-data codec.
//!
//! Callback data lives in chat history forever, so it is versioned (`1:` prefix), compact
//! (≤ 64 bytes, Bot API limit for `callback_data`) and every payload shape ever produced must
//! still decode; see the tests.

use super::i18n::Lang;
use crate::config::ModelConfig;
use crate::domain::{Format, ImageId};
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

/// Decoded callback data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// Main menu entries.
    MenuCreate,
    MenuBalance,
    MenuHelp,
    /// "📝 Add text" (the local caption tool).
    MenuAddText,
    /// Model chosen for a draft.
    Model {
        draft: u128,
        model: String,
    },
    /// Format chosen for a draft and model.
    Format {
        draft: u128,
        model: String,
        format: Format,
    },
    /// "Create more" under a result.
    CreateMore,
    /// Toggle favourite on a library item.
    Star(ImageId),
    /// Cancel the job made from a draft.
    Cancel {
        draft: u128,
    },
    /// Send a library item (again) to its owner.
    Resend(ImageId),
}

const V: &str = "1";

fn fmt_code(f: Format) -> &'static str {
    match f {
        Format::Vertical => "v",
        Format::Square => "s",
        Format::Horizontal => "h",
    }
}

fn b36(n: u128) -> String {
    crate::domain::JobId(n).short()
}

fn from_b36(s: &str) -> Option<u128> {
    u128::from_str_radix(s, 36).ok()
}

impl Callback {
    /// Encodes to at most 64 bytes (model ids are ≤ 24 chars by config validation).
    pub fn encode(&self) -> String {
        match self {
            Callback::MenuCreate => format!("{V}:c"),
            Callback::MenuBalance => format!("{V}:b"),
            Callback::MenuHelp => format!("{V}:h"),
            Callback::MenuAddText => format!("{V}:t"),
            Callback::Model { draft, model } => format!("{V}:m:{}:{model}", b36(*draft)),
            Callback::Format { draft, model, format } => format!("{V}:f:{}:{model}:{}", b36(*draft), fmt_code(*format)),
            Callback::CreateMore => format!("{V}:n"),
            Callback::Star(id) => format!("{V}:s:{}", id.short()),
            Callback::Cancel { draft } => format!("{V}:x:{}", b36(*draft)),
            Callback::Resend(id) => format!("{V}:r:{}", id.short()),
        }
    }

    /// Decodes any version this build understands; `None` for garbage.
    pub fn decode(s: &str) -> Option<Callback> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.first() != Some(&V) {
            return None;
        }
        Some(match parts[1..] {
            ["c"] => Callback::MenuCreate,
            ["b"] => Callback::MenuBalance,
            ["h"] => Callback::MenuHelp,
            ["t"] => Callback::MenuAddText,
            ["n"] => Callback::CreateMore,
            ["m", d, m] => Callback::Model { draft: from_b36(d)?, model: m.to_string() },
            ["f", d, m, f] => Callback::Format {
                draft: from_b36(d)?,
                model: m.to_string(),
                format: match f {
                    "v" => Format::Vertical,
                    "s" => Format::Square,
                    "h" => Format::Horizontal,
                    _ => return None,
                },
            },
            ["s", id] => Callback::Star(ImageId::from_short(id)?),
            ["x", d] => Callback::Cancel { draft: from_b36(d)? },
            ["r", id] => Callback::Resend(ImageId::from_short(id)?),
            _ => return None,
        })
    }
}

fn button(text: String, cb: Callback) -> InlineKeyboardButton {
    InlineKeyboardButton::callback(text, cb.encode())
}

/// Main menu under /start and /menu.
pub fn main_menu(lang: Lang) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![
        vec![button(lang.t("menu_create"), Callback::MenuCreate)],
        vec![button(lang.t("menu_add_text"), Callback::MenuAddText)],
        vec![button(lang.t("menu_balance"), Callback::MenuBalance), button(lang.t("menu_help"), Callback::MenuHelp)],
    ])
}

/// One button per model: "name · price".
pub fn models(draft: u128, models: &[ModelConfig], currency: &str) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(models.iter().map(|m| {
        vec![button(
            format!("{} · {} {currency}", m.display_name, m.price),
            Callback::Model { draft, model: m.id.clone() },
        )]
    }))
}

/// Format buttons the model supports, in one row.
pub fn formats(lang: Lang, draft: u128, model: &ModelConfig) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![
        model
            .formats
            .iter()
            .map(|f| {
                button(
                    lang.t(&format!("format_{}", f.as_str())),
                    Callback::Format { draft, model: model.id.clone(), format: *f },
                )
            })
            .collect::<Vec<_>>(),
    ])
}

/// Under a progress message: Cancel.
pub fn cancel(lang: Lang, draft: u128) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![button(lang.t("cancel"), Callback::Cancel { draft })]])
}

/// Under a result: "Create more" and the favourite toggle.
pub fn result(lang: Lang, item: ImageId, starred: bool) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![
        button(lang.t("create_more"), Callback::CreateMore),
        button(lang.t(if starred { "unstar" } else { "star" }), Callback::Star(item)),
    ]])
}

/// Under the "delivery was cut off" notice.
pub fn resend(lang: Lang, item: ImageId) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![button(lang.t("resend"), Callback::Resend(item))]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Callback> {
        vec![
            Callback::MenuCreate,
            Callback::MenuBalance,
            Callback::MenuHelp,
            Callback::MenuAddText,
            Callback::CreateMore,
            Callback::Model { draft: u128::MAX, model: "x".repeat(24) },
            Callback::Format { draft: u128::MAX, model: "y".repeat(24), format: Format::Horizontal },
            Callback::Star(ImageId(u128::MAX)),
            Callback::Cancel { draft: u128::MAX },
            Callback::Resend(ImageId(u128::MAX)),
        ]
    }

    #[test]
    fn every_payload_round_trips_within_64_bytes() {
        for cb in all() {
            let s = cb.encode();
            assert!(s.len() <= 64, "{s} is {} bytes", s.len());
            assert_eq!(Callback::decode(&s), Some(cb));
        }
    }

    #[test]
    fn payloads_already_in_chat_history_still_decode() {
        // Literal strings as produced by version 1; never edit these, add new ones.
        assert_eq!(Callback::decode("1:c"), Some(Callback::MenuCreate));
        assert_eq!(Callback::decode("1:t"), Some(Callback::MenuAddText));
        assert_eq!(
            Callback::decode("1:f:2s:demo:v"),
            Some(Callback::Format { draft: 100, model: "demo".into(), format: Format::Vertical })
        );
        assert_eq!(Callback::decode("1:m:2s:flux-dev"), Some(Callback::Model { draft: 100, model: "flux-dev".into() }));
        assert_eq!(Callback::decode("1:s:2s"), Some(Callback::Star(ImageId(100))));
        assert_eq!(Callback::decode("1:x:2s"), Some(Callback::Cancel { draft: 100 }));
        assert_eq!(Callback::decode("1:r:2s"), Some(Callback::Resend(ImageId(100))));
        assert_eq!(Callback::decode("2:c"), None);
        assert_eq!(Callback::decode("1:f:zz:demo:q"), None);
    }
}
