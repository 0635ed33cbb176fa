//! Keyboards as pure functions, and the callback-data codec.
//!
//! Callback data lives in chat history forever, so it is versioned (`2:` prefix since the
//! library; `1:` before), compact (≤ 64 bytes, Bot API limit for `callback_data`) and every
//! payload shape ever produced must still decode; see the tests.

use super::i18n::Lang;
use crate::config::ModelConfig;
use crate::domain::{Credits, Format, ImageId, Subject, Task};
use crate::store::records::{LibraryItem, Preset};
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
    /// "👥 Invite": the user's referral link and what it brought.
    MenuInvite,
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
    /// "📚 Library" in the main menu (page 0, everything).
    MenuLibrary,
    /// A library page: which items, 0-based page.
    Library {
        filter: Shelf,
        page: u16,
    },
    /// Open a library item: re-send it by file_id with its actions.
    Open(ImageId),
    /// "🔁" under an item: the same settings with a new seed.
    Rerun(ImageId),
    /// "🔍" under an item: offer 2× / 4×.
    ResizeMenu(ImageId),
    /// Enlarge an item by 2 or 4.
    Resize {
        item: ImageId,
        factor: u8,
    },
    /// "🏷" under an item: offer the user's categories and "new".
    CategoryMenu(ImageId),
    /// Put an item into the user's category number `category`.
    Categorise {
        item: ImageId,
        category: u32,
    },
    /// Ask for a new category's name for an item.
    CategoryNew(ImageId),
    /// "🗑" under an item: ask to confirm.
    Delete(ImageId),
    /// Confirmed deletion.
    DeleteYes(ImageId),
    /// Deletion called off: the actions again.
    DeleteNo(ImageId),
    /// "💾 Save as preset" under an item: ask for a name.
    SavePreset(ImageId),
    /// A preset picked for a draft (instead of a model).
    UsePreset {
        draft: u128,
        preset: u32,
    },
    /// The user's presets with rename/delete buttons.
    Presets,
    /// Ask for a preset's new name.
    PresetRename(u32),
    /// Delete a preset.
    PresetDelete(u32),
    /// A value chosen for a draft's model option: indices into `[[models.options]]` and its
    /// `values` (config validation caps both, so a byte each is plenty).
    Choice {
        draft: u128,
        option: u8,
        value: u8,
    },
    /// /language: the interface language picked (`ru`, `en`).
    Language(String),
    /// An alternative model pressed under a failed job (its model retired or its provider
    /// refusing): the same request again, on `model`, as a new job.
    Alternative {
        draft: u128,
        model: String,
    },
    /// "🧰 Photo tools" in the main menu.
    MenuTools,
    /// A photo mode chosen (from the tools menu, or under a received photo, which then
    /// becomes its first input).
    Tool(Task),
    /// "⏭ Skip" at a mode's optional instruction.
    ToolSkip,
    /// "✖ Cancel" at any step of a photo mode: the flow ends.
    FlowCancel,
    /// "✏️ Edit this" under a result: the item becomes the first photo of an edit.
    EditThis(ImageId),
    /// "⬆️ Upscale" under a result: the item goes to an AI upscale model (or, with none, to
    /// the local 2×/4× resize).
    UpscaleThis(ImageId),
    /// "📝 Add text" under a received photo: the photo gets a caption drawn on it.
    TextOnPhoto,
    /// "✍️ Write" in the main menu.
    MenuWrite,
    /// "🎨 Create" / "✏️ Edit" with the prompt a "✍️ Write" job wrote.
    UseWritten {
        job: crate::domain::JobId,
        edit: bool,
    },
    /// The subject type picked at the start of "🧬 From references".
    Subject(Subject),
    /// "🎬 Create video" (main menu, and "🎬 Create more" under a video).
    MenuVideo,
    /// "⚡ Quick mode": a photo becomes a video with the quick settings, no questions.
    MenuQuick,
    /// "✅ Create for N" under a video draft's settings and price.
    VideoConfirm {
        draft: u128,
    },
    /// "📊 Statistics": the user's videos and the average time per settings.
    VideoStats,
    /// "📊 Operations" under the balance: a page (0 first) of the user's ledger.
    History(u16),
    /// "💳 Top up" (under the balance and "not enough credits"): the package list.
    TopUp,
    /// A package picked from the list: send its invoice. The id is a `[[billing.packages]]`
    /// id (≤ 24 of `a-z 0-9 _ -`, so it fits and has no `:`).
    Buy(String),
    /// "💎 Crypto" beside a package: create its Crypto Pay invoice (same id rules as `Buy`).
    BuyCrypto(String),
    /// "⭐ Subscription" (under the balance and a used-up daily quota): the levels sold as
    /// Stars subscriptions, each with its invoice link.
    Subscribe,
    /// "Да" / "Нет" to running a job on its pricier fallback model.
    Failover {
        job: crate::domain::JobId,
        yes: bool,
    },
}

/// The callback code of a photo mode (one letter; every code ever written must keep decoding).
fn task_code(t: Task) -> &'static str {
    match t {
        Task::TextToImage => "c",
        Task::Edit => "e",
        Task::Upscale => "u",
        Task::ImageToVideo => "i",
        Task::TextToVideo => "t",
        Task::RemoveBackground => "b",
        Task::Retouch => "r",
        Task::FaceSwap => "f",
        Task::Variations => "v",
        Task::StyleTransfer => "s",
        Task::Sketch => "k",
        Task::Reference => "R",
    }
}

fn task_of(code: &str) -> Option<Task> {
    Task::HANDLED.into_iter().find(|t| task_code(*t) == code)
}

/// Which library items a page lists (callback form of `store::library::LibraryFilter`, with a
/// category by its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shelf {
    All,
    Favourites,
    Category(u32),
}

/// The version written now.
const V: &str = "2";
/// The first version: menu, draft, star, cancel and resend payloads only.
const V1: &str = "1";

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
            Callback::MenuInvite => format!("{V}:i"),
            Callback::Model { draft, model } => format!("{V}:m:{}:{model}", b36(*draft)),
            Callback::Format { draft, model, format } => format!("{V}:f:{}:{model}:{}", b36(*draft), fmt_code(*format)),
            Callback::CreateMore => format!("{V}:n"),
            Callback::Star(id) => format!("{V}:s:{}", id.short()),
            Callback::Cancel { draft } => format!("{V}:x:{}", b36(*draft)),
            Callback::Resend(id) => format!("{V}:r:{}", id.short()),
            Callback::MenuLibrary => format!("{V}:L"),
            Callback::Library { filter, page } => {
                let f = match filter {
                    Shelf::All => "a".to_string(),
                    Shelf::Favourites => "s".to_string(),
                    Shelf::Category(n) => format!("c{n}"),
                };
                format!("{V}:l:{f}:{page}")
            }
            Callback::Open(id) => format!("{V}:o:{}", id.short()),
            Callback::Rerun(id) => format!("{V}:a:{}", id.short()),
            Callback::ResizeMenu(id) => format!("{V}:z:{}", id.short()),
            Callback::Resize { item, factor } => format!("{V}:z:{}:{factor}", item.short()),
            Callback::CategoryMenu(id) => format!("{V}:k:{}", id.short()),
            Callback::Categorise { item, category } => format!("{V}:k:{}:{category}", item.short()),
            Callback::CategoryNew(id) => format!("{V}:kn:{}", id.short()),
            Callback::Delete(id) => format!("{V}:d:{}", id.short()),
            Callback::DeleteYes(id) => format!("{V}:dy:{}", id.short()),
            Callback::DeleteNo(id) => format!("{V}:dn:{}", id.short()),
            Callback::SavePreset(id) => format!("{V}:p:{}", id.short()),
            Callback::UsePreset { draft, preset } => format!("{V}:u:{}:{preset}", b36(*draft)),
            Callback::Presets => format!("{V}:P"),
            Callback::PresetRename(n) => format!("{V}:pr:{n}"),
            Callback::PresetDelete(n) => format!("{V}:pd:{n}"),
            Callback::Choice { draft, option, value } => format!("{V}:q:{}:{option}:{value}", b36(*draft)),
            Callback::Language(code) => format!("{V}:g:{code}"),
            Callback::Alternative { draft, model } => format!("{V}:y:{}:{model}", b36(*draft)),
            Callback::MenuTools => format!("{V}:T"),
            Callback::Tool(task) => format!("{V}:w:{}", task_code(*task)),
            Callback::ToolSkip => format!("{V}:ws"),
            Callback::FlowCancel => format!("{V}:X"),
            Callback::EditThis(id) => format!("{V}:e:{}", id.short()),
            Callback::UpscaleThis(id) => format!("{V}:U:{}", id.short()),
            Callback::TextOnPhoto => format!("{V}:wt"),
            Callback::MenuWrite => format!("{V}:M"),
            Callback::UseWritten { job, edit } => format!("{V}:W:{}:{}", b36(job.0), if *edit { "e" } else { "c" }),
            Callback::Subject(s) => format!("{V}:wj:{}", s.as_str()),
            Callback::MenuVideo => format!("{V}:V"),
            Callback::MenuQuick => format!("{V}:Vq"),
            Callback::VideoConfirm { draft } => format!("{V}:Vc:{}", b36(*draft)),
            Callback::VideoStats => format!("{V}:Vs"),
            Callback::History(page) => format!("{V}:H:{page}"),
            Callback::TopUp => format!("{V}:B"),
            Callback::Buy(id) => format!("{V}:B:{id}"),
            Callback::BuyCrypto(id) => format!("{V}:Bc:{id}"),
            Callback::Subscribe => format!("{V}:S"),
            Callback::Failover { job, yes } => format!("{V}:F:{}:{}", b36(job.0), if *yes { "y" } else { "n" }),
        }
    }

    /// Decodes any version this build understands; `None` for garbage.
    pub fn decode(s: &str) -> Option<Callback> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.first() {
            Some(&V1) => Self::decode_v1(&parts[1..]),
            Some(&V) => Self::decode_v1(&parts[1..]).or_else(|| Self::decode_v2(&parts[1..])),
            _ => None,
        }
    }

    /// Shapes that version 2 added.
    fn decode_v2(parts: &[&str]) -> Option<Callback> {
        let id = |s: &str| ImageId::from_short(s);
        Some(match *parts {
            ["L"] => Callback::MenuLibrary,
            ["i"] => Callback::MenuInvite,
            ["l", f, page] => Callback::Library {
                filter: match f {
                    "a" => Shelf::All,
                    "s" => Shelf::Favourites,
                    c => Shelf::Category(c.strip_prefix('c')?.parse().ok()?),
                },
                page: page.parse().ok()?,
            },
            ["o", i] => Callback::Open(id(i)?),
            ["a", i] => Callback::Rerun(id(i)?),
            ["z", i] => Callback::ResizeMenu(id(i)?),
            ["z", i, f @ ("2" | "4")] => Callback::Resize { item: id(i)?, factor: f.parse().ok()? },
            ["k", i] => Callback::CategoryMenu(id(i)?),
            ["k", i, n] => Callback::Categorise { item: id(i)?, category: n.parse().ok()? },
            ["kn", i] => Callback::CategoryNew(id(i)?),
            ["d", i] => Callback::Delete(id(i)?),
            ["dy", i] => Callback::DeleteYes(id(i)?),
            ["dn", i] => Callback::DeleteNo(id(i)?),
            ["p", i] => Callback::SavePreset(id(i)?),
            ["u", d, n] => Callback::UsePreset { draft: from_b36(d)?, preset: n.parse().ok()? },
            ["P"] => Callback::Presets,
            ["pr", n] => Callback::PresetRename(n.parse().ok()?),
            ["pd", n] => Callback::PresetDelete(n.parse().ok()?),
            ["q", d, o, v] => Callback::Choice { draft: from_b36(d)?, option: o.parse().ok()?, value: v.parse().ok()? },
            ["g", code @ ("ru" | "en")] => Callback::Language(code.to_string()),
            ["y", d, m] => Callback::Alternative { draft: from_b36(d)?, model: m.to_string() },
            ["T"] => Callback::MenuTools,
            ["w", code] => Callback::Tool(task_of(code)?),
            ["ws"] => Callback::ToolSkip,
            ["wt"] => Callback::TextOnPhoto,
            ["M"] => Callback::MenuWrite,
            ["wj", s] => Callback::Subject(Subject::parse(s)?),
            ["X"] => Callback::FlowCancel,
            ["V"] => Callback::MenuVideo,
            ["Vq"] => Callback::MenuQuick,
            ["Vc", d] => Callback::VideoConfirm { draft: from_b36(d)? },
            ["Vs"] => Callback::VideoStats,
            ["H", page] => Callback::History(page.parse().ok()?),
            ["B"] => Callback::TopUp,
            ["B", id] if package_id_ok(id) => Callback::Buy(id.to_string()),
            ["Bc", id] if package_id_ok(id) => Callback::BuyCrypto(id.to_string()),
            ["S"] => Callback::Subscribe,
            ["F", j, a @ ("y" | "n")] => Callback::Failover { job: crate::domain::JobId(from_b36(j)?), yes: a == "y" },
            ["e", i] => Callback::EditThis(id(i)?),
            ["U", i] => Callback::UpscaleThis(id(i)?),
            ["W", j, m @ ("c" | "e")] => {
                Callback::UseWritten { job: crate::domain::JobId(from_b36(j)?), edit: m == "e" }
            }
            _ => return None,
        })
    }

    /// Shapes of version 1 (still written under `2:` too).
    fn decode_v1(parts: &[&str]) -> Option<Callback> {
        Some(match *parts {
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

/// A `[[billing.packages]]` id as config validation allows it.
fn package_id_ok(id: &str) -> bool {
    (1..=24).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// "💳 Top up" alone (under the balance and under "not enough credits").
pub fn top_up(lang: Lang) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([[button(lang.t("btn_topup"), Callback::TopUp)]])
}

/// One row per package: "100 кредитов (+10) — ⭐50 · ≈ 11 генераций" (the bonus and the
/// generations only when there are some), in config order; with `crypto` (Crypto Pay is
/// configured) a package with a crypto price gets "💎 Крипто (1.5 USDT)" beside it.
pub fn packages(
    lang: Lang,
    currency: &crate::config::Currency,
    offers: &[crate::billing::Offer],
    crypto: bool,
) -> InlineKeyboardMarkup {
    let rows = offers.iter().map(|o| {
        let bonus = o.package.bonus();
        let bonus = if bonus.0 > 0 { lang.tf("topup_bonus", &[("bonus", &bonus.0)]) } else { String::new() };
        let generations = match o.generations {
            Some(n) if n > 0 => lang.tf("topup_generations", &[("count", &lang.counted(n, "generations"))]),
            _ => String::new(),
        };
        let text = lang.tf(
            "topup_button",
            &[
                ("credits", &lang.money(o.package.credits, currency)),
                ("bonus", &bonus),
                ("stars", &o.package.stars),
                ("generations", &generations),
            ],
        );
        let mut row = vec![button(text, Callback::Buy(o.package.id.clone()))];
        if let Some(price) = o.package.crypto.as_ref().filter(|_| crypto) {
            let price = format!("{} {}", price.amount, price.currency());
            row.push(button(lang.tf("btn_crypto", &[("price", &price)]), Callback::BuyCrypto(o.package.id.clone())));
        }
        row
    });
    InlineKeyboardMarkup::new(rows)
}

fn button(text: String, cb: Callback) -> InlineKeyboardButton {
    InlineKeyboardButton::callback(text, cb.encode())
}

/// The button of a photo mode ("⬆️ Улучшить" …): locale key `tool_<task>`.
fn tool_button(lang: Lang, task: Task) -> InlineKeyboardButton {
    button(lang.t(&format!("tool_{}", task.as_str())), Callback::Tool(task))
}

/// Photo modes two per row (the ones with a usable model; the caller picks them), then
/// "✖ Cancel".
pub fn tools(lang: Lang, tasks: &[Task]) -> InlineKeyboardMarkup {
    let mut rows: Vec<Vec<InlineKeyboardButton>> =
        tasks.chunks(2).map(|pair| pair.iter().map(|t| tool_button(lang, *t)).collect()).collect();
    rows.push(vec![button(lang.t("cancel"), Callback::FlowCancel)]);
    InlineKeyboardMarkup::new(rows)
}

/// Under a photo received with no flow open: what can be done with it besides the edit
/// (the modes whose first input is a photo, and "📝 Add text"), and "✖ Cancel".
pub fn photo_actions(lang: Lang, tasks: &[Task]) -> InlineKeyboardMarkup {
    let mut buttons: Vec<InlineKeyboardButton> = tasks.iter().map(|t| tool_button(lang, *t)).collect();
    buttons.push(button(lang.t("menu_add_text"), Callback::TextOnPhoto));
    let mut rows: Vec<Vec<InlineKeyboardButton>> = buttons.chunks(2).map(<[_]>::to_vec).collect();
    rows.push(vec![button(lang.t("cancel"), Callback::FlowCancel)]);
    InlineKeyboardMarkup::new(rows)
}

/// Under a video draft's settings: "✅ Create for N" (`price` already in the user's words)
/// and "✖ Cancel".
pub fn video_confirm(lang: Lang, draft: u128, price: &str) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![
        button(lang.tf("video_confirm_button", &[("price", &price)]), Callback::VideoConfirm { draft }),
        button(lang.t("cancel"), Callback::FlowCancel),
    ]])
}

/// Under the balance: "💳 Top up" (when packages are sold), "⭐ Subscription" (when a level
/// is sold as one) and "📊 Operations".
pub fn balance(lang: Lang, top_up: bool, subscribe: bool) -> InlineKeyboardMarkup {
    let mut row = Vec::new();
    if top_up {
        row.push(button(lang.t("btn_topup"), Callback::TopUp));
    }
    if subscribe {
        row.push(button(lang.t("btn_subscribe"), Callback::Subscribe));
    }
    row.push(button(lang.t("history_button"), Callback::History(0)));
    InlineKeyboardMarkup::new(vec![row])
}

/// Under a used-up daily quota: "⭐ Subscription" and / or "💳 Top up"; `None` when neither is
/// sold.
pub fn more_quota(lang: Lang, subscribe: bool, top_up: bool) -> Option<InlineKeyboardMarkup> {
    let mut row = Vec::new();
    if subscribe {
        row.push(button(lang.t("btn_subscribe"), Callback::Subscribe));
    }
    if top_up {
        row.push(button(lang.t("btn_topup"), Callback::TopUp));
    }
    (!row.is_empty()).then(|| InlineKeyboardMarkup::new(vec![row]))
}

/// "⭐ Subscription" alone (under the package list, when a level is sold as one).
pub fn subscribe_row(lang: Lang) -> [InlineKeyboardButton; 1] {
    [button(lang.t("btn_subscribe"), Callback::Subscribe)]
}

/// One URL button per subscription invoice link: `(button text, link)`.
pub fn subscription_links(links: Vec<(String, url::Url)>) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(links.into_iter().map(|(text, url)| [InlineKeyboardButton::url(text, url)]))
}

/// Under a history page: newer / older pages.
pub fn history(lang: Lang, page: u16, more: bool) -> InlineKeyboardMarkup {
    let mut row = Vec::new();
    if page > 0 {
        row.push(button(lang.t("history_newer"), Callback::History(page - 1)));
    }
    if more {
        row.push(button(lang.t("history_older"), Callback::History(page.saturating_add(1))));
    }
    InlineKeyboardMarkup::new(if row.is_empty() { vec![] } else { vec![row] })
}

/// "🎬 Create more" (and "⚡ Quick mode" when it can run): under 📊 and after a video.
pub fn video_more(lang: Lang, quick: bool) -> InlineKeyboardMarkup {
    let mut row = vec![button(lang.t("video_more"), Callback::MenuVideo)];
    if quick {
        row.push(button(lang.t("menu_quick"), Callback::MenuQuick));
    }
    InlineKeyboardMarkup::new(vec![row])
}

/// Under a written prompt: create a picture from it, or edit photos with it.
pub fn use_written(lang: Lang, job: crate::domain::JobId) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![
        vec![button(lang.t("write_create"), Callback::UseWritten { job, edit: false })],
        vec![button(lang.t("write_edit"), Callback::UseWritten { job, edit: true })],
    ])
}

/// "✖ Cancel" for a step that waits for a message.
pub fn flow_cancel(lang: Lang) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![button(lang.t("cancel"), Callback::FlowCancel)]])
}

/// "⏭ Skip" and "✖ Cancel", for an optional instruction.
pub fn skip_or_cancel(lang: Lang) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![
        button(lang.t("skip"), Callback::ToolSkip),
        button(lang.t("cancel"), Callback::FlowCancel),
    ]])
}

/// "🧬 From references": what the photos show, two per row, then "✖ Cancel".
pub fn subjects(lang: Lang) -> InlineKeyboardMarkup {
    let buttons: Vec<InlineKeyboardButton> = Subject::ALL
        .into_iter()
        .map(|s| button(lang.t(&format!("subject_{}", s.as_str())), Callback::Subject(s)))
        .collect();
    let mut rows: Vec<Vec<InlineKeyboardButton>> = buttons.chunks(2).map(<[_]>::to_vec).collect();
    rows.push(vec![button(lang.t("cancel"), Callback::FlowCancel)]);
    InlineKeyboardMarkup::new(rows)
}

/// Which main-menu entries lead somewhere: a mode shows only with a usable model for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MenuModes {
    /// A `text_to_image` model ("🎨 Create").
    pub create: bool,
    /// A model for some photo mode ("🧰 Photo tools").
    pub tools: bool,
    /// A language model (`[llm]`) for "✍️ Write".
    pub write: bool,
    /// A video model ("🎬 Create video", "📊 Statistics").
    pub video: bool,
    /// An `image_to_video` model for "⚡ Quick mode".
    pub quick: bool,
}

/// Main menu under /start and /menu; "🎨 Create", "🧰 Photo tools" and "✍️ Write" only when
/// `modes` has them.
pub fn main_menu(lang: Lang, modes: MenuModes) -> InlineKeyboardMarkup {
    let mut first = Vec::new();
    if modes.create {
        first.push(button(lang.t("menu_create"), Callback::MenuCreate));
    }
    if modes.tools {
        first.push(button(lang.t("menu_tools"), Callback::MenuTools));
    }
    let write = if modes.write { vec![button(lang.t("menu_write"), Callback::MenuWrite)] } else { vec![] };
    let mut video = Vec::new();
    if modes.video {
        video.push(button(lang.t("menu_video"), Callback::MenuVideo));
    }
    if modes.video && modes.quick {
        video.push(button(lang.t("menu_quick"), Callback::MenuQuick));
    }
    let mut last = vec![button(lang.t("menu_balance"), Callback::MenuBalance)];
    if modes.video {
        last.push(button(lang.t("menu_stats"), Callback::VideoStats));
    }
    last.push(button(lang.t("menu_help"), Callback::MenuHelp));
    let rows = [
        first,
        video,
        write,
        vec![
            button(lang.t("menu_add_text"), Callback::MenuAddText),
            button(lang.t("menu_library"), Callback::MenuLibrary),
        ],
        last,
        vec![button(lang.t("menu_invite"), Callback::MenuInvite)],
    ];
    InlineKeyboardMarkup::new(rows.into_iter().filter(|r| !r.is_empty()))
}

/// One button per model: "name · price" (the price as `price_of` says it, in the user's
/// language), then one per preset of the user ("💾 name").
pub fn models(
    draft: u128,
    models: &[ModelConfig],
    presets: &[Preset],
    price_of: impl Fn(&ModelConfig) -> String,
) -> InlineKeyboardMarkup {
    let models = models.iter().map(|m| {
        vec![button(format!("{} · {}", m.display_name, price_of(m)), Callback::Model { draft, model: m.id.clone() })]
    });
    let presets =
        presets.iter().map(|p| vec![button(format!("💾 {}", p.name), Callback::UsePreset { draft, preset: p.number })]);
    InlineKeyboardMarkup::new(models.chain(presets))
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

/// Under the question whether to run a job on its pricier fallback: "✅ Да" and "✖ Нет".
pub fn failover(lang: Lang, job: crate::domain::JobId) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([[
        button(lang.t("failover_yes"), Callback::Failover { job, yes: true }),
        button(lang.t("failover_no"), Callback::Failover { job, yes: false }),
    ]])
}

/// Under a job that failed because its model or provider stopped working: one button per
/// model that can do the same task ("name · price"); a press runs the request on it.
pub fn alternatives(
    draft: u128,
    models: &[ModelConfig],
    price_of: impl Fn(&ModelConfig) -> String,
) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(models.iter().map(|m| {
        vec![button(
            format!("{} · {}", m.display_name, price_of(m)),
            Callback::Alternative { draft, model: m.id.clone() },
        )]
    }))
}

/// The values of a model's option `index`, two per row; a value that costs more says how
/// much (`extra` renders the amount).
pub fn choices(
    draft: u128,
    model: &ModelConfig,
    index: usize,
    extra: impl Fn(Credits) -> String,
) -> InlineKeyboardMarkup {
    let Some(option) = model.options.get(index) else { return InlineKeyboardMarkup::default() };
    let buttons: Vec<InlineKeyboardButton> = option
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let text =
                if v.price > Credits::ZERO { format!("{} · +{}", v.label(), extra(v.price)) } else { v.label() };
            let (option, value) = (u8::try_from(index).unwrap_or(u8::MAX), u8::try_from(i).unwrap_or(u8::MAX));
            button(text, Callback::Choice { draft, option, value })
        })
        .collect();
    InlineKeyboardMarkup::new(buttons.chunks(2).map(<[InlineKeyboardButton]>::to_vec))
}

/// /language: one button per language, in its own name.
pub fn languages() -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(
        Lang::ALL.iter().map(|l| vec![button(l.name().to_string(), Callback::Language(l.code().to_string()))]),
    )
}

/// Under a progress message: Cancel.
pub fn cancel(lang: Lang, draft: u128) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![button(lang.t("cancel"), Callback::Cancel { draft })]])
}

/// Under every result and opened library item: star, re-run, resize, category, preset,
/// delete, "✏️ Edit this" and "⬆️ Upscale" (pictures only), and "Create more". Re-run and
/// preset only for model-made items.
pub fn actions(lang: Lang, item: &LibraryItem) -> InlineKeyboardMarkup {
    let id = item.id;
    let by_model = item.kind == "create";
    let mut first = vec![button(lang.t(if item.favourite { "unstar" } else { "star" }), Callback::Star(id))];
    if by_model {
        first.push(button(lang.t("rerun"), Callback::Rerun(id)));
    }
    let picture = item.media == crate::domain::MediaKind::Image;
    if picture {
        first.push(button(lang.t("resize"), Callback::ResizeMenu(id)));
    }
    let mut second = vec![button(lang.t("categorise"), Callback::CategoryMenu(id))];
    if by_model {
        second.push(button(lang.t("save_preset"), Callback::SavePreset(id)));
    }
    second.push(button(lang.t("delete"), Callback::Delete(id)));
    let mut rows = vec![first, second];
    if picture {
        rows.push(vec![
            button(lang.t("edit_this"), Callback::EditThis(id)),
            button(lang.t("upscale_this"), Callback::UpscaleThis(id)),
        ]);
    }
    // A video asks for another video (seed 004's "🎬 Создать ещё").
    rows.push(match item.media {
        crate::domain::MediaKind::Video | crate::domain::MediaKind::Animation => {
            vec![button(lang.t("video_more"), Callback::MenuVideo)]
        }
        _ => vec![button(lang.t("create_more"), Callback::CreateMore)],
    });
    InlineKeyboardMarkup::new(rows)
}

/// "🔍": the two enlargement factors.
pub fn resize(lang: Lang, item: ImageId) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![
        button(lang.t("resize_2x"), Callback::Resize { item, factor: 2 }),
        button(lang.t("resize_4x"), Callback::Resize { item, factor: 4 }),
        button(lang.t("back"), Callback::DeleteNo(item)),
    ]])
}

/// "🗑": confirm or keep.
pub fn confirm_delete(lang: Lang, item: ImageId) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![
        button(lang.t("delete_yes"), Callback::DeleteYes(item)),
        button(lang.t("delete_no"), Callback::DeleteNo(item)),
    ]])
}

/// "🏷": the user's categories, two per row, then "new" and "back".
pub fn categories(lang: Lang, item: ImageId, cats: &[(u32, String)]) -> InlineKeyboardMarkup {
    let mut rows: Vec<Vec<InlineKeyboardButton>> = cats
        .chunks(2)
        .map(|pair| {
            pair.iter()
                .map(|(n, name)| button(format!("🏷 {name}"), Callback::Categorise { item, category: *n }))
                .collect()
        })
        .collect();
    rows.push(vec![
        button(lang.t("category_new"), Callback::CategoryNew(item)),
        button(lang.t("back"), Callback::DeleteNo(item)),
    ]);
    InlineKeyboardMarkup::new(rows)
}

/// A library page: numbered item buttons (4 per row), ◀ ▶, the filters, and presets.
pub fn library(
    lang: Lang,
    items: &[LibraryItem],
    filter: Shelf,
    page: usize,
    pages: usize,
    cats: &[(u32, String)],
) -> InlineKeyboardMarkup {
    let first = page * crate::library::PAGE_SIZE;
    let mut rows: Vec<Vec<InlineKeyboardButton>> = items
        .chunks(4)
        .enumerate()
        .map(|(r, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, it)| {
                    let star = if it.favourite { "⭐" } else { "" };
                    button(format!("{}{star}", first + r * 4 + i + 1), Callback::Open(it.id))
                })
                .collect()
        })
        .collect();
    let mut nav = Vec::new();
    let to = |p: usize| Callback::Library { filter, page: u16::try_from(p).unwrap_or(u16::MAX) };
    if page > 0 {
        nav.push(button("◀".into(), to(page - 1)));
    }
    if page + 1 < pages {
        nav.push(button("▶".into(), to(page + 1)));
    }
    if !nav.is_empty() {
        rows.push(nav);
    }
    let mark = |f: Shelf, label: String| if f == filter { format!("• {label}") } else { label };
    let mut filters = vec![
        button(mark(Shelf::All, lang.t("library_all")), Callback::Library { filter: Shelf::All, page: 0 }),
        button(
            mark(Shelf::Favourites, lang.t("library_favourites")),
            Callback::Library { filter: Shelf::Favourites, page: 0 },
        ),
    ];
    filters.extend(cats.iter().map(|(n, name)| {
        button(
            mark(Shelf::Category(*n), format!("🏷 {name}")),
            Callback::Library { filter: Shelf::Category(*n), page: 0 },
        )
    }));
    rows.extend(filters.chunks(3).map(<[_]>::to_vec));
    rows.push(vec![button(lang.t("presets_button"), Callback::Presets)]);
    InlineKeyboardMarkup::new(rows)
}

/// The user's presets: name, rename, delete per row.
pub fn presets(lang: Lang, presets: &[Preset]) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(presets.iter().map(|p| {
        vec![
            button(format!("✏️ {}", p.name), Callback::PresetRename(p.number)),
            button(lang.t("delete"), Callback::PresetDelete(p.number)),
        ]
    }))
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
            Callback::MenuInvite,
            Callback::CreateMore,
            Callback::Model { draft: u128::MAX, model: "x".repeat(24) },
            Callback::Format { draft: u128::MAX, model: "y".repeat(24), format: Format::Horizontal },
            Callback::Star(ImageId(u128::MAX)),
            Callback::Cancel { draft: u128::MAX },
            Callback::Resend(ImageId(u128::MAX)),
            Callback::MenuLibrary,
            Callback::Library { filter: Shelf::All, page: 0 },
            Callback::Library { filter: Shelf::Favourites, page: u16::MAX },
            Callback::Library { filter: Shelf::Category(u32::MAX), page: u16::MAX },
            Callback::Open(ImageId(u128::MAX)),
            Callback::Rerun(ImageId(u128::MAX)),
            Callback::ResizeMenu(ImageId(u128::MAX)),
            Callback::Resize { item: ImageId(u128::MAX), factor: 2 },
            Callback::Resize { item: ImageId(u128::MAX), factor: 4 },
            Callback::CategoryMenu(ImageId(u128::MAX)),
            Callback::Categorise { item: ImageId(u128::MAX), category: u32::MAX },
            Callback::CategoryNew(ImageId(u128::MAX)),
            Callback::Delete(ImageId(u128::MAX)),
            Callback::DeleteYes(ImageId(u128::MAX)),
            Callback::DeleteNo(ImageId(u128::MAX)),
            Callback::SavePreset(ImageId(u128::MAX)),
            Callback::UsePreset { draft: u128::MAX, preset: u32::MAX },
            Callback::Presets,
            Callback::PresetRename(u32::MAX),
            Callback::PresetDelete(u32::MAX),
            Callback::Choice { draft: u128::MAX, option: u8::MAX, value: u8::MAX },
            Callback::Language("ru".into()),
            Callback::Language("en".into()),
            Callback::Alternative { draft: u128::MAX, model: "z".repeat(24) },
            Callback::MenuTools,
            Callback::ToolSkip,
            Callback::FlowCancel,
            Callback::TextOnPhoto,
            Callback::MenuWrite,
            Callback::EditThis(ImageId(u128::MAX)),
            Callback::UpscaleThis(ImageId(u128::MAX)),
            Callback::UseWritten { job: crate::domain::JobId(u128::MAX), edit: true },
            Callback::UseWritten { job: crate::domain::JobId(1), edit: false },
            Callback::MenuVideo,
            Callback::MenuQuick,
            Callback::VideoConfirm { draft: u128::MAX },
            Callback::VideoStats,
            Callback::History(u16::MAX),
            Callback::TopUp,
            Callback::Buy("x".repeat(24)),
            Callback::Buy("small_1-a".into()),
            Callback::BuyCrypto("x".repeat(24)),
            Callback::BuyCrypto("small".into()),
            Callback::Subscribe,
            Callback::Failover { job: crate::domain::JobId(u128::MAX), yes: true },
            Callback::Failover { job: crate::domain::JobId(7), yes: false },
        ]
        .into_iter()
        .chain(Subject::ALL.map(Callback::Subject))
        .chain(Task::HANDLED.into_iter().map(Callback::Tool))
        .collect()
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
    fn current_payloads_are_version_2() {
        for cb in all() {
            assert!(cb.encode().starts_with("2:"), "{cb:?}");
        }
        // Version 1 knew none of the library shapes: a forged `1:` prefix does not reach them.
        assert_eq!(Callback::decode("1:o:2s"), None);
        assert_eq!(Callback::decode("1:L"), None);
        assert_eq!(Callback::decode("2:z:2s:3"), None, "only 2× and 4×");
        assert_eq!(Callback::decode("2:l:x:0"), None);
        assert_eq!(Callback::decode("2:l:c:0"), None);
        assert_eq!(Callback::decode("2:g:de"), None, "only languages the bot speaks");
        assert_eq!(Callback::decode("2:B:Big"), None, "package ids as config allows them");
        assert_eq!(Callback::decode(&format!("2:B:{}", "x".repeat(25))), None);
    }

    #[test]
    fn version_2_payloads_keep_decoding() {
        // Literal strings as produced by version 2; never edit these, add new ones.
        let id = ImageId(100);
        let cases = [
            ("2:c", Callback::MenuCreate),
            ("2:s:2s", Callback::Star(id)),
            ("2:f:2s:demo:v", Callback::Format { draft: 100, model: "demo".into(), format: Format::Vertical }),
            ("2:L", Callback::MenuLibrary),
            ("2:l:a:0", Callback::Library { filter: Shelf::All, page: 0 }),
            ("2:l:s:3", Callback::Library { filter: Shelf::Favourites, page: 3 }),
            ("2:l:c7:1", Callback::Library { filter: Shelf::Category(7), page: 1 }),
            ("2:o:2s", Callback::Open(id)),
            ("2:a:2s", Callback::Rerun(id)),
            ("2:z:2s", Callback::ResizeMenu(id)),
            ("2:z:2s:4", Callback::Resize { item: id, factor: 4 }),
            ("2:k:2s", Callback::CategoryMenu(id)),
            ("2:k:2s:5", Callback::Categorise { item: id, category: 5 }),
            ("2:kn:2s", Callback::CategoryNew(id)),
            ("2:d:2s", Callback::Delete(id)),
            ("2:dy:2s", Callback::DeleteYes(id)),
            ("2:dn:2s", Callback::DeleteNo(id)),
            ("2:p:2s", Callback::SavePreset(id)),
            ("2:u:2s:1", Callback::UsePreset { draft: 100, preset: 1 }),
            ("2:P", Callback::Presets),
            ("2:pr:1", Callback::PresetRename(1)),
            ("2:pd:1", Callback::PresetDelete(1)),
            ("2:q:2s:0:2", Callback::Choice { draft: 100, option: 0, value: 2 }),
            ("2:g:ru", Callback::Language("ru".into())),
            ("2:y:2s:spare", Callback::Alternative { draft: 100, model: "spare".into() }),
            ("2:T", Callback::MenuTools),
            ("2:w:u", Callback::Tool(Task::Upscale)),
            ("2:w:b", Callback::Tool(Task::RemoveBackground)),
            ("2:w:r", Callback::Tool(Task::Retouch)),
            ("2:w:f", Callback::Tool(Task::FaceSwap)),
            ("2:w:v", Callback::Tool(Task::Variations)),
            ("2:w:s", Callback::Tool(Task::StyleTransfer)),
            ("2:w:k", Callback::Tool(Task::Sketch)),
            ("2:w:e", Callback::Tool(Task::Edit)),
            ("2:ws", Callback::ToolSkip),
            ("2:wt", Callback::TextOnPhoto),
            ("2:M", Callback::MenuWrite),
            ("2:X", Callback::FlowCancel),
            ("2:e:2s", Callback::EditThis(id)),
            ("2:U:2s", Callback::UpscaleThis(id)),
            ("2:W:2s:c", Callback::UseWritten { job: crate::domain::JobId(100), edit: false }),
            ("2:W:2s:e", Callback::UseWritten { job: crate::domain::JobId(100), edit: true }),
            ("2:w:R", Callback::Tool(Task::Reference)),
            ("2:wj:person", Callback::Subject(Subject::Person)),
            ("2:wj:animal", Callback::Subject(Subject::Animal)),
            ("2:wj:product", Callback::Subject(Subject::Product)),
            ("2:wj:default", Callback::Subject(Subject::Default)),
            ("2:B", Callback::TopUp),
            ("2:B:small", Callback::Buy("small".into())),
            ("2:Bc:small", Callback::BuyCrypto("small".into())),
            ("2:S", Callback::Subscribe),
            ("2:F:2s:y", Callback::Failover { job: crate::domain::JobId(100), yes: true }),
            ("2:F:2s:n", Callback::Failover { job: crate::domain::JobId(100), yes: false }),
        ];
        for (stored, cb) in cases {
            assert_eq!(Callback::decode(stored), Some(cb.clone()), "{stored}");
            assert_eq!(cb.encode(), stored);
        }
    }

    #[test]
    fn the_main_menu_shows_only_modes_with_a_model() {
        let texts = |modes| {
            let kb = main_menu(Lang::Ru, modes);
            kb.inline_keyboard.iter().flatten().map(|b| b.text.clone()).collect::<Vec<_>>().join(" ")
        };
        let all = texts(MenuModes { create: true, tools: true, write: false, video: false, quick: false });
        assert!(all.contains("Создать") && all.contains("Фото-инструменты"), "{all}");
        let none = texts(MenuModes { create: false, tools: false, write: false, video: false, quick: false });
        assert!(!none.contains("Создать") && !none.contains("Фото-инструменты"), "{none}");
        assert!(none.contains("Библиотека") && none.contains("Баланс"), "{none}");
        assert_eq!(
            main_menu(Lang::Ru, MenuModes { create: false, tools: false, write: false, video: false, quick: false })
                .inline_keyboard
                .len(),
            3,
            "no empty row (add text + library, balance + help, invite)"
        );
        assert!(none.contains("👥 Пригласить"), "{none}");
        let video = texts(MenuModes { create: false, tools: false, write: false, video: true, quick: true });
        assert!(
            video.contains("Создать видео") && video.contains("Быстрый") && video.contains("Статистика"),
            "{video}"
        );
        let tools_only = texts(MenuModes { create: false, tools: true, write: false, video: false, quick: false });
        assert!(!tools_only.contains("Создать") && tools_only.contains("Фото-инструменты"), "{tools_only}");
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
        assert_eq!(Callback::decode("1:b"), Some(Callback::MenuBalance));
        assert_eq!(Callback::decode("1:h"), Some(Callback::MenuHelp));
        assert_eq!(Callback::decode("1:n"), Some(Callback::CreateMore));
        assert_eq!(Callback::decode("3:c"), None);
        assert_eq!(Callback::decode("1:f:zz:demo:q"), None);
    }
}
