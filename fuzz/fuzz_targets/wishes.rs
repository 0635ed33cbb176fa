//! The style-wish parser on arbitrary text: no panic, deterministic, every unknown word comes
//! from the input, and the style stays within its documented ranges.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/imaging/mod.rs"]
mod imaging;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let w = imaging::parse_wishes(&text);
    assert_eq!(w, imaging::parse_wishes(&text), "deterministic");
    for word in &w.unknown {
        assert!(!word.is_empty() && text.contains(word.as_str()), "{word:?} not in {text:?}");
    }
    let s = &w.style;
    assert!(s.margin_pct <= 40 && s.plate_opacity_pct <= 100 && s.blur_px <= 64, "{s:?}");
    if let imaging::TextSize::Px(px) = s.size {
        assert!((6..=1000).contains(&px), "{px}");
    }
});
