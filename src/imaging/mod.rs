//! Pure functions over image bytes: probe, decode with limits, fit for Telegram, thumbnails,
//! and the demo renderer. CPU only; callers run these on blocking threads.
