//! Jobs started from a library item: "🔁 Again" (same settings, new seed) and "🔍 Resize".

use super::{JobEngine, JobsError, NewJob, Submitted};
use crate::domain::{Format, ImageId, UserId};
use crate::store::records::{JobPayload, LibraryItem};

/// Where a new job started from the library shows its progress.
#[derive(Debug, Clone)]
pub struct JobTarget {
    pub chat_id: i64,
    pub lang: String,
    pub progress_message_id: Option<i32>,
}

impl JobEngine {
    async fn owned_item(&self, user: UserId, id: ImageId) -> Result<Option<LibraryItem>, JobsError> {
        let item = self.inner.store.read(move |rx| rx.get_library_item(id)).await?;
        Ok(item.filter(|i| i.owner == user))
    }

    /// Runs a user's `create` item again with the same settings and a new seed (hold and
    /// capture like any job). `None` if refused or the item was not made by a model;
    /// [`JobsError::InputsGone`] for an edit whose uploaded photos were pruned.
    pub async fn rerun(&self, user: UserId, id: ImageId, to: JobTarget) -> Result<Option<Submitted>, JobsError> {
        let Some(item) = self.owned_item(user, id).await?.filter(|i| i.kind == "create") else { return Ok(None) };
        let job = match item.job_id {
            Some(j) => self.inner.store.read(move |rx| rx.get_job(j)).await?,
            None => None,
        };
        let seed = rand::random::<u32>() as u64;
        let payload = match job.map(|j| j.payload) {
            Some(JobPayload::Generate {
                prompt,
                negative,
                format,
                width,
                height,
                aspect_ratio,
                inputs,
                options,
                ..
            }) => JobPayload::Generate { prompt, negative, format, width, height, aspect_ratio, seed, inputs, options },
            _ => {
                let (width, height) = item.format.default_size();
                JobPayload::Generate {
                    prompt: item.prompt.clone(),
                    negative: item.negative.clone(),
                    format: item.format,
                    width,
                    height,
                    aspect_ratio: None,
                    seed,
                    inputs: vec![],
                    options: Default::default(),
                }
            }
        };
        self.submit_for(user, item.model_id, payload, to).await.map(Some)
    }

    /// Enlarges a user's item 2× or 4× as a local job (`billing.resize_price`). `None` if refused.
    pub async fn resize(
        &self,
        user: UserId,
        id: ImageId,
        factor: u32,
        to: JobTarget,
    ) -> Result<Option<Submitted>, JobsError> {
        let Some(item) = self.owned_item(user, id).await?.filter(|_| matches!(factor, 2 | 4)) else {
            return Ok(None);
        };
        let payload = JobPayload::Resize { input: item.sha256, prompt: item.prompt, factor, source: Some(item.id) };
        self.submit_for(user, crate::domain::RESIZE_MODEL.into(), payload, to).await.map(Some)
    }

    async fn submit_for(
        &self,
        user: UserId,
        model_id: String,
        payload: JobPayload,
        to: JobTarget,
    ) -> Result<Submitted, JobsError> {
        self.submit(NewJob {
            user_id: user,
            chat_id: to.chat_id,
            lang: to.lang,
            model_id,
            payload,
            progress_message_id: to.progress_message_id,
            draft_id: None,
            priority: self.is_admin(user),
        })
        .await
    }
}

/// The format a preset or an item asks for, given the model's formats (the first one when the
/// model cannot do it).
pub fn usable_format(wanted: Format, formats: &[Format]) -> Format {
    if formats.contains(&wanted) { wanted } else { formats.first().copied().unwrap_or(wanted) }
}
