//! Video settings as the statistics see them: a clip's time depends on its length and size far
//! more than on anything else, so ETA and 📊 are keyed by (model, duration, quality) — seed
//! 004's rule: mean of the last 10 runs of the same settings → of the model's last 100 → 120 s.

use super::{Inner, JobEngine, JobsError, eta_from};
use crate::config::{Choices, ModelConfig};
use crate::domain::{JobStatus, UserId};
use crate::providers::json_u32;
use crate::store::records::{JobPayload, JobRecord};

/// The chosen duration and quality of a video job, from the model's options named
/// `duration` (seconds) and `quality` (pixels of the longer side); `None` where the model
/// declares no such option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VideoSettings {
    pub duration_secs: Option<u32>,
    pub quality_px: Option<u32>,
}

impl VideoSettings {
    /// The settings `choices` pick on `model` (first values for options not chosen).
    pub fn of(model: &ModelConfig, choices: &Choices) -> VideoSettings {
        let chosen = model.chosen_values(choices);
        VideoSettings {
            duration_secs: chosen.get("duration").and_then(json_u32),
            quality_px: chosen.get("quality").and_then(json_u32),
        }
    }

    /// The stored statistics key (`v:10s:600p`; a missing part is `-`). Picture jobs use
    /// their format instead ([`JobPayload::stats_key`]), so the two never mix.
    pub fn key(self) -> String {
        let part = |v: Option<u32>, unit: &str| v.map_or_else(|| "-".to_string(), |v| format!("{v}{unit}"));
        format!("v:{}:{}", part(self.duration_secs, "s"), part(self.quality_px, "p"))
    }

    /// The clip size for a photo (or format) of `size`: scaled so the longer side is the
    /// chosen quality (kept when none is declared), both sides even (libx264 refuses odd ones).
    pub fn size(self, (w, h): (u32, u32)) -> (u32, u32) {
        let (w, h) = (w.max(1), h.max(1));
        let (w, h) = match self.quality_px {
            Some(q) if q > 0 => {
                let long = w.max(h) as u64;
                ((w as u64 * q as u64 / long) as u32, (h as u64 * q as u64 / long) as u32)
            }
            _ => (w, h),
        };
        (crate::providers::even(w), crate::providers::even(h))
    }

    /// Every combination of `model`'s duration and quality values (one `None` for a missing
    /// option): at most 8 × 8 by config validation.
    pub fn all(model: &ModelConfig) -> Vec<VideoSettings> {
        let values = |name: &str| -> Vec<Option<u32>> {
            match model.options.iter().find(|o| o.name == name) {
                Some(o) => o.values.iter().map(|v| json_u32(&v.value)).collect(),
                None => vec![None],
            }
        };
        let qualities = values("quality");
        values("duration")
            .into_iter()
            .flat_map(|d| qualities.iter().map(move |q| VideoSettings { duration_secs: d, quality_px: *q }))
            .collect()
    }
}

/// The statistics key of a job: [`VideoSettings::key`] for a video model, else the payload's
/// own ([`JobPayload::stats_key`]: the format, or `local`).
pub(crate) fn stats_key(model: Option<&ModelConfig>, payload: &JobPayload) -> String {
    match (model, payload) {
        (Some(m), JobPayload::Generate { options, .. }) if m.task.is_video() => VideoSettings::of(m, options).key(),
        _ => payload.stats_key().to_string(),
    }
}

/// [`stats_key`] of a job with the engine's current catalog.
pub(crate) fn job_stats_key(inner: &Inner, job: &JobRecord) -> String {
    stats_key(inner.catalog.model(&job.model_id).as_ref(), &job.payload)
}

/// Mean run time of one model's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsTime {
    pub model_id: String,
    pub model_name: String,
    pub settings: VideoSettings,
    /// Runs the mean is taken over (at most [`super::ETA_ALL_SETTINGS`]).
    pub runs: usize,
    /// Mean, seconds (rounded up).
    pub mean_secs: u64,
}

/// What 📊 shows a user.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VideoStats {
    /// Videos this user received (of their newest [`USER_JOBS_SCANNED`] jobs).
    pub made: usize,
    /// Average time per settings, of every user's runs, for the settings that have any.
    pub times: Vec<SettingsTime>,
}

/// Newest jobs of a user 📊 counts videos among: a bounded read, however long the history.
pub const USER_JOBS_SCANNED: usize = 1000;

impl JobEngine {
    /// ETA before a job exists, for a model, format and chosen options: seconds (see
    /// [`Self::eta_secs`]).
    pub async fn eta_for_choices(&self, model: &ModelConfig, format: crate::domain::Format, choices: &Choices) -> u64 {
        let key = match model.task.is_video() {
            true => VideoSettings::of(model, choices).key(),
            false => format.as_str().to_string(),
        };
        eta_from(&self.inner.store, model.id.clone(), key).await
    }

    /// 📊 for `user`: how many videos they made and the mean time of each video model's
    /// settings (the last [`super::ETA_ALL_SETTINGS`] runs of each). Reads at most
    /// [`USER_JOBS_SCANNED`] jobs and 100 durations per settings.
    pub async fn video_stats(&self, user: UserId) -> Result<VideoStats, JobsError> {
        let models: Vec<ModelConfig> = self.inner.catalog.all().into_iter().filter(|m| m.task.is_video()).collect();
        let ids: Vec<String> = models.iter().map(|m| m.id.clone()).collect();
        let stats = self
            .inner
            .store
            .read(move |rx| {
                let jobs = rx.find_user_jobs(user, USER_JOBS_SCANNED)?;
                let made =
                    jobs.iter().filter(|j| j.status == JobStatus::Succeeded && ids.contains(&j.model_id)).count();
                let mut times = Vec::new();
                for m in &models {
                    for settings in VideoSettings::all(m) {
                        let runs = rx.find_durations(&m.id, &settings.key(), super::ETA_ALL_SETTINGS)?;
                        if runs.is_empty() {
                            continue;
                        }
                        let mean_ms = runs.iter().sum::<u64>() / runs.len() as u64;
                        times.push(SettingsTime {
                            model_id: m.id.clone(),
                            model_name: m.display_name.clone(),
                            settings,
                            runs: runs.len(),
                            mean_secs: mean_ms.div_ceil(1000).max(1),
                        });
                    }
                }
                Ok::<_, crate::store::StoreError>(VideoStats { made, times })
            })
            .await?;
        Ok(stats)
    }
}
