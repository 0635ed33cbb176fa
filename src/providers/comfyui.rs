//! ComfyUI native API client (protocols.md §3).
