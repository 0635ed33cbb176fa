//! User-facing texts: `src/bot/locales/<lang>.toml`, compiled in. English is the fallback.

use std::collections::HashMap;
use std::sync::LazyLock;

/// A supported language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

type Texts = HashMap<String, String>;

// Immutable data parsed once from the binary; not state, so a static is fine here.
static LOCALES: LazyLock<[Texts; 2]> =
    LazyLock::new(|| [parse(include_str!("locales/en.toml")), parse(include_str!("locales/ru.toml"))]);

fn parse(src: &str) -> Texts {
    toml::from_str(src).unwrap_or_default()
}

impl Lang {
    /// Picks the language from Telegram's `language_code` (`ru`, `ru-RU`, `uk`… → Russian for
    /// the CIS codes the seed bots served; anything else → English).
    pub fn from_code(code: Option<&str>) -> Lang {
        match code.map(|c| c.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase()) {
            Some(c) if matches!(c.as_str(), "ru" | "uk" | "be" | "kk") => Lang::Ru,
            _ => Lang::En,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    /// The text for `key`, falling back to English, then to the key itself.
    pub fn t(self, key: &str) -> String {
        let idx = self as usize;
        LOCALES[idx].get(key).or_else(|| LOCALES[0].get(key)).cloned().unwrap_or_else(|| key.to_string())
    }

    /// [`Lang::t`] with `{name}` placeholders filled.
    pub fn tf(self, key: &str, args: &[(&str, &(dyn std::fmt::Display + Sync))]) -> String {
        let mut s = self.t(key);
        for (k, v) in args {
            s = s.replace(&format!("{{{k}}}"), &v.to_string());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_locale_has_the_same_keys_and_placeholders() {
        let [en, ru] = &*LOCALES;
        assert!(en.len() > 30, "en parsed");
        let mut en_keys: Vec<_> = en.keys().collect();
        let mut ru_keys: Vec<_> = ru.keys().collect();
        en_keys.sort();
        ru_keys.sort();
        assert_eq!(en_keys, ru_keys);
        let ph = |s: &str| {
            let mut v: Vec<String> =
                s.split('{').skip(1).filter_map(|p| p.split('}').next().map(String::from)).collect();
            v.sort();
            v
        };
        for k in en.keys() {
            assert_eq!(ph(&en[k]), ph(&ru[k]), "placeholders differ for {k}");
        }
    }

    #[test]
    fn language_choice_and_fallback() {
        assert_eq!(Lang::from_code(Some("ru-RU")), Lang::Ru);
        assert_eq!(Lang::from_code(Some("de")), Lang::En);
        assert_eq!(Lang::from_code(None), Lang::En);
        assert_eq!(Lang::Ru.tf("pong", &[]), "🏓 понг");
        assert_eq!(Lang::En.tf("done", &[("secs", &7)]), "✅ Done in 7 s");
        assert_eq!(Lang::Ru.t("no_such_key"), "no_such_key");
    }
}
