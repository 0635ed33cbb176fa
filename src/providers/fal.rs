//! fal.ai queue API client (protocols.md §2).
