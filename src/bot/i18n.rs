//! User-facing texts: `src/bot/locales/<lang>.toml`, compiled in. English is the fallback.
//!
//! A number before a noun takes the noun's plural form for that number (Russian has three:
//! 1 кредит, 2 кредита, 5 кредитов). Such nouns are stored as their forms joined by `|` in
//! CLDR order (one|few|many|other as the language has them; `plural_*` keys, and the
//! configured currency), and [`Lang::count`] picks the form with the CLDR rules of
//! `intl_pluralrules`.

use crate::config::Currency;
use crate::domain::Credits;
use intl_pluralrules::{PluralCategory, PluralRuleType, PluralRules};
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

static RULES: LazyLock<[Option<PluralRules>; 2]> = LazyLock::new(|| {
    let rules = |code: &str| {
        let id: unic_langid::LanguageIdentifier = code.parse().ok()?;
        PluralRules::create(id, PluralRuleType::CARDINAL).ok()
    };
    [rules("en"), rules("ru")]
});

fn parse(src: &str) -> Texts {
    toml::from_str(src).unwrap_or_default()
}

impl Lang {
    /// Every language, in the order `/language` offers them.
    pub const ALL: [Lang; 2] = [Lang::Ru, Lang::En];

    /// Picks the language from a stored choice or Telegram's `language_code` (`ru`, `ru-RU`,
    /// `uk`… → Russian for the CIS codes the seed bots served; anything else → English).
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

    /// The language's own name, for the `/language` buttons.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "🇬🇧 English",
            Lang::Ru => "🇷🇺 Русский",
        }
    }

    /// The text for `key`, falling back to English, then to the key itself.
    pub fn t(self, key: &str) -> String {
        let idx = self as usize;
        LOCALES[idx].get(key).or_else(|| LOCALES[0].get(key)).cloned().unwrap_or_else(|| key.to_string())
    }

    /// [`Lang::t`] with `{name}` placeholders filled. One pass over the text: a value that
    /// itself contains `{…}` (a prompt, a name) is never filled in again.
    pub fn tf(self, key: &str, args: &[(&str, &(dyn std::fmt::Display + Sync))]) -> String {
        let text = self.t(key);
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}').map(|close| (&after[..close], close)) {
                Some((name, close)) if args.iter().any(|(k, _)| *k == name) => {
                    if let Some((_, v)) = args.iter().find(|(k, _)| *k == name) {
                        out.push_str(&v.to_string());
                    }
                    rest = &after[close + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// `n` and the form of a `|`-separated noun that goes with it: `count(5, "кредит|кредита|кредитов")`
    /// is "5 кредитов". Forms are in CLDR category order (one, few, many, other); a noun
    /// with fewer forms uses its last one for the rest, so a plain word never changes.
    pub fn count(self, n: i64, forms: &str) -> String {
        format!("{n} {}", self.form(n, forms))
    }

    /// The form of `forms` for `n` (see [`Lang::count`]).
    pub fn form(self, n: i64, forms: &str) -> String {
        let forms: Vec<&str> = forms.split('|').map(str::trim).collect();
        let category = RULES[self as usize].as_ref().and_then(|r| r.select(n.unsigned_abs()).ok());
        let idx = match (self, category) {
            (_, Some(PluralCategory::ONE)) => 0,
            (Lang::Ru, Some(PluralCategory::FEW)) => 1,
            (Lang::Ru, Some(PluralCategory::MANY)) => 2,
            (Lang::Ru, _) => 3,
            (Lang::En, _) => 1,
        };
        forms.get(idx).or(forms.last()).copied().unwrap_or_default().to_string()
    }

    /// A `plural_<noun>` text with its number: `counted(3, "pictures")` → "3 картинки".
    pub fn counted(self, n: i64, noun: &str) -> String {
        self.count(n, &self.t(&format!("plural_{noun}")))
    }

    /// An amount in the bot's currency, as this language says it ("100 кредитов").
    pub fn money(self, amount: Credits, currency: &Currency) -> String {
        self.count(amount.0, currency.label(self.code()))
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
        for (k, v) in ru.iter().filter(|(k, _)| k.starts_with("plural_")) {
            assert_eq!(v.split('|').count(), 3, "{k}: Russian nouns have one|few|many forms");
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

    #[test]
    fn placeholders_are_filled_once_never_inside_values() {
        let prompt = "a {secs} cat";
        let text = Lang::En.tf("choose_model", &[("prompt", &prompt), ("secs", &5)]);
        assert!(text.contains("«a {secs} cat»"), "{text}");
    }

    #[test]
    fn russian_numbers_take_the_right_noun_form() {
        let credits = Currency::from_forms([("ru", "кредит|кредита|кредитов"), ("en", "credit|credits")]);
        let ru = |n| Lang::Ru.money(Credits(n), &credits);
        assert_eq!(
            [ru(1), ru(2), ru(5), ru(11), ru(21), ru(22), ru(25), ru(111), ru(0)],
            [
                "1 кредит",
                "2 кредита",
                "5 кредитов",
                "11 кредитов",
                "21 кредит",
                "22 кредита",
                "25 кредитов",
                "111 кредитов",
                "0 кредитов"
            ]
        );
        assert_eq!(Lang::En.money(Credits(1), &credits), "1 credit");
        assert_eq!(Lang::En.money(Credits(100), &credits), "100 credits");
        // A plain label (the old `currency = "⭐"`) is used as is.
        let plain = Currency::from_forms([("en", "⭐")]);
        assert_eq!(Lang::Ru.money(Credits(3), &plain), "3 ⭐");
        assert_eq!(Lang::Ru.counted(3, "pictures"), "3 картинки");
        assert_eq!(Lang::En.counted(1, "pictures"), "1 picture");
    }
}
