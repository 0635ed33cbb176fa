//! Multi-step flows: where each chat is ([`Step`]), stored as JSON under the chat id in the
//! dialogues table through teloxide's [`Storage`] trait, so a restart between two messages does
//! not lose it; and drafts, the prompts waiting for their buttons.

use crate::domain::{Subject, Task};
use crate::store::records::Draft;
use crate::store::{Store, StoreError};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use teloxide::dispatching::dialogue::Storage;
use teloxide::types::ChatId;

/// Where a chat is. Stored as JSON under the chat id (dialogues table); the `flow` tag names
/// the step, and every stored shape must keep decoding (see the tests). `Idle` is never
/// stored: it is the absence of a row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "flow", rename_all = "snake_case")]
pub enum Step {
    /// In no flow: a text is a prompt to create from, a photo starts an edit.
    #[default]
    Idle,
    AddTextPhoto,
    AddTextText {
        input: String,
    },
    AddTextWishes {
        input: String,
        text: String,
    },
    /// Waiting for the name of a new category for a library item (short id).
    CategoryName {
        item: String,
    },
    /// Waiting for the name of a preset saved from a library item (short id).
    PresetName {
        item: String,
    },
    /// Waiting for a preset's new name.
    PresetRename {
        number: u32,
    },
    /// Photos received for an edit (sha256 of each stored input, in order), and the
    /// instruction once known (a caption on any of them, or a text sent after).
    Photos {
        inputs: Vec<String>,
        #[serde(default)]
        caption: Option<String>,
    },
    /// "✍️ Write": waiting for the idea the language model makes a prompt of.
    Write,
    /// A photo mode ([`Task::TOOLS`]): the photos received so far in its slot order, and
    /// its instruction once given (empty when skipped); for [`Task::Reference`] the subject
    /// type once picked (absent, and not written, for every other mode).
    Tool {
        task: Task,
        inputs: Vec<String>,
        #[serde(default)]
        caption: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Subject>,
    },
    /// "🎬 Create video" (`quick`: "⚡ Quick mode"): the photo to animate once received (at
    /// most one), and the motion prompt once given (empty when skipped) — or, with no photo,
    /// the description of a text → video job.
    Video {
        quick: bool,
        inputs: Vec<String>,
        #[serde(default)]
        caption: Option<String>,
    },
}

impl Step {
    /// The photos gathered by a step that gathers them (an edit's or a photo mode's), and
    /// the instruction given with them.
    pub fn photo_set(self) -> Option<(Vec<String>, Option<String>)> {
        match self {
            Step::Photos { inputs, caption }
            | Step::Tool { inputs, caption, .. }
            | Step::Video { inputs, caption, .. } => Some((inputs, caption)),
            _ => None,
        }
    }
}

/// The dialogues and drafts tables as teloxide's dialogue storage.
pub struct RedbDialogues {
    store: Store,
}

impl RedbDialogues {
    pub fn new(store: Store) -> Arc<RedbDialogues> {
        Arc::new(RedbDialogues { store })
    }

    /// The chat's step (`Idle` when none, or when the stored one no longer decodes, i.e. was
    /// written by a newer build).
    pub async fn step(&self, chat: ChatId) -> Result<Step, StoreError> {
        let raw = self.store.read(move |rx| rx.get_dialogue(chat.0)).await?;
        Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default())
    }

    /// Saves a draft (a prompt waiting for buttons).
    pub async fn put_draft(&self, d: Draft) -> Result<(), StoreError> {
        self.store.write(move |tx| tx.put_draft(&d)).await
    }

    /// Loads a draft.
    pub async fn draft(&self, id: u128) -> Result<Option<Draft>, StoreError> {
        self.store.read(move |rx| rx.get_draft(id)).await
    }
}

impl Storage<Step> for RedbDialogues {
    type Error = StoreError;

    fn remove_dialogue(self: Arc<Self>, chat: ChatId) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move { self.store.write(move |tx| tx.delete_dialogue(chat.0)).await })
    }

    fn update_dialogue(self: Arc<Self>, chat: ChatId, step: Step) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move {
            if step == Step::Idle {
                return self.remove_dialogue(chat).await;
            }
            let bytes = serde_json::to_vec(&step).map_err(|e| StoreError::Codec(e.to_string()))?;
            self.store.write(move |tx| tx.put_dialogue(chat.0, &bytes)).await
        })
    }

    fn get_dialogue(self: Arc<Self>, chat: ChatId) -> BoxFuture<'static, Result<Option<Step>, StoreError>> {
        Box::pin(async move { Ok(Some(self.step(chat).await?).filter(|s| *s != Step::Idle)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_steps_keep_decoding() {
        // Literal states as this version stores them; never edit these, add new ones.
        let cases = [
            (r#"{"flow":"add_text_photo"}"#, Step::AddTextPhoto),
            (r#"{"flow":"add_text_text","input":"ab"}"#, Step::AddTextText { input: "ab".into() }),
            (
                r#"{"flow":"add_text_wishes","input":"ab","text":"hi"}"#,
                Step::AddTextWishes { input: "ab".into(), text: "hi".into() },
            ),
            (r#"{"flow":"category_name","item":"2s"}"#, Step::CategoryName { item: "2s".into() }),
            (r#"{"flow":"preset_name","item":"2s"}"#, Step::PresetName { item: "2s".into() }),
            (r#"{"flow":"preset_rename","number":3}"#, Step::PresetRename { number: 3 }),
            (
                r#"{"flow":"photos","inputs":["ab","cd"],"caption":"make it blue"}"#,
                Step::Photos { inputs: vec!["ab".into(), "cd".into()], caption: Some("make it blue".into()) },
            ),
            (r#"{"flow":"write"}"#, Step::Write),
            (
                r#"{"flow":"tool","task":"face_swap","inputs":["ab"],"caption":null}"#,
                Step::Tool { task: Task::FaceSwap, inputs: vec!["ab".into()], caption: None, subject: None },
            ),
            (
                r#"{"flow":"tool","task":"reference","inputs":["ab","cd"],"caption":"[1] и [2]","subject":"animal"}"#,
                Step::Tool {
                    task: Task::Reference,
                    inputs: vec!["ab".into(), "cd".into()],
                    caption: Some("[1] и [2]".into()),
                    subject: Some(Subject::Animal),
                },
            ),
        ];
        for (stored, step) in cases {
            assert_eq!(serde_json::from_str::<Step>(stored).expect(stored), step);
            assert_eq!(serde_json::to_string(&step).expect("json"), stored);
        }
    }

    #[tokio::test]
    async fn the_storage_keeps_a_step_per_chat_and_idle_is_no_row() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let d = RedbDialogues::new(store.clone());
        let (a, b) = (ChatId(1), ChatId(2));
        d.clone().update_dialogue(a, Step::AddTextPhoto).await.expect("put");
        assert_eq!(d.clone().get_dialogue(a).await.expect("get"), Some(Step::AddTextPhoto));
        assert_eq!(d.clone().get_dialogue(b).await.expect("get"), None);
        d.clone().update_dialogue(a, Step::Idle).await.expect("idle");
        assert_eq!(store.read(move |rx| rx.get_dialogue(1)).await.expect("raw"), None, "idle removes the row");
        store.write(|tx| tx.put_dialogue(2, br#"{"flow":"from_a_newer_build"}"#)).await.expect("raw");
        assert_eq!(d.step(b).await.expect("step"), Step::Idle, "an unknown stored step reads as idle");
    }
}
