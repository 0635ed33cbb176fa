//! The Bot API spec table the emulator validates every call against.
//!
//! `botapi_spec.json` is derived from the official machine-readable spec
//! (`shared/telegram-bot-api/api.json`, MIT, see `BOTAPI-LICENSE`) and shipped in the binary.
//! Each field is one string: `name: Type | Type` (`name?:` when optional, `= value` when a
//! subtype's discriminator is fixed, e.g. `type: String = photo`). `unions` lists abstract types
//! (`BotCommandScope`, `InputMedia`, …) with their variants.
//!
//! Regenerate after updating api.json:
//! `cargo test emulator::spec::tests::regenerate_spec_table -- --ignored`
//! (the `spec_table_matches_api_json` test fails while the two differ).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The embedded table (generated, do not edit by hand).
pub(crate) const SPEC_JSON: &str = include_str!("botapi_spec.json");

/// The shipped file's shape.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct SpecFile {
    source: String,
    license: String,
    regenerate: String,
    version: String,
    release_date: String,
    methods: BTreeMap<String, Vec<String>>,
    types: BTreeMap<String, Vec<String>>,
    unions: BTreeMap<String, Vec<String>>,
}

/// One parameter of a method or field of an object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldSpec {
    pub name: String,
    pub types: Vec<String>,
    pub required: bool,
    /// Fixed value of a discriminator field (`type`, `status`, `source`) in a union variant.
    pub constant: Option<String>,
}

impl FieldSpec {
    fn parse(s: &str) -> Option<FieldSpec> {
        let (name, rest) = s.split_once(": ")?;
        let (name, required) = match name.strip_suffix('?') {
            Some(n) => (n, false),
            None => (name, true),
        };
        let (types, constant) = match rest.split_once(" = ") {
            Some((t, c)) => (t, Some(c.to_owned())),
            None => (rest, None),
        };
        Some(FieldSpec {
            name: name.to_owned(),
            types: types.split(" | ").map(str::to_owned).collect(),
            required,
            constant,
        })
    }

    #[cfg(test)]
    fn render(&self) -> String {
        let mut s = format!("{}{}: {}", self.name, if self.required { "" } else { "?" }, self.types.join(" | "));
        if let Some(c) = &self.constant {
            s.push_str(" = ");
            s.push_str(c);
        }
        s
    }

    pub fn accepts_file(&self) -> bool {
        self.types.iter().any(|t| t == "InputFile")
    }
}

/// A method: its canonical (camelCase) name and parameters.
#[derive(Debug)]
pub(crate) struct MethodSpec {
    pub name: String,
    pub fields: Vec<FieldSpec>,
}

impl MethodSpec {
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[derive(Debug)]
enum TypeSpec {
    Object(Vec<FieldSpec>),
    Union(Vec<String>),
}

/// The loaded table: methods by lowercase name, types by name.
#[derive(Debug)]
pub(crate) struct Spec {
    pub version: String,
    methods: HashMap<String, MethodSpec>,
    types: HashMap<String, TypeSpec>,
}

impl Spec {
    /// Loads the embedded table. It is generated and checked by a test, so a failure here is a
    /// build defect; it still returns an error instead of panicking.
    pub fn embedded() -> Result<Spec, String> {
        Spec::from_text(SPEC_JSON)
    }

    /// A table with no methods: every call is refused as unknown.
    pub fn empty() -> Spec {
        Spec { version: String::new(), methods: HashMap::new(), types: HashMap::new() }
    }

    fn from_text(text: &str) -> Result<Spec, String> {
        let file: SpecFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let fields = |list: Vec<String>| -> Result<Vec<FieldSpec>, String> {
            list.iter().map(|s| FieldSpec::parse(s).ok_or_else(|| format!("bad field line {s:?}"))).collect()
        };
        let mut methods = HashMap::new();
        for (name, list) in file.methods {
            let spec = MethodSpec { name: name.clone(), fields: fields(list)? };
            methods.insert(name.to_ascii_lowercase(), spec);
        }
        let mut types = HashMap::new();
        for (name, list) in file.types {
            types.insert(name, TypeSpec::Object(fields(list)?));
        }
        for (name, list) in file.unions {
            types.insert(name, TypeSpec::Union(list));
        }
        Ok(Spec { version: file.version, methods, types })
    }

    /// Looks a method up case-insensitively, as Telegram does.
    pub fn method(&self, name: &str) -> Option<&MethodSpec> {
        self.methods.get(&name.to_ascii_lowercase())
    }

    /// Checks a JSON value against one of the spec's type alternatives (`["Integer", "String"]`).
    /// `path` names the value in error messages (`reply_markup.inline_keyboard[0][1]`).
    pub fn check(&self, v: &Value, types: &[String], path: &str) -> Result<(), String> {
        if let [only] = types {
            return self.check_type(v, only, path);
        }
        if types.iter().any(|t| self.check_type(v, t, path).is_ok()) {
            return Ok(());
        }
        // Report the error of the alternative the value most looks like.
        if let Some(best) = self.best_variant(v, types) {
            return self.check_type(v, &best, path);
        }
        Err(format!("{path} must be {}, got {}", types.join(" or "), json_kind(v)))
    }

    fn check_type(&self, v: &Value, ty: &str, path: &str) -> Result<(), String> {
        let wrong = || format!("{path} must be {ty}, got {}", json_kind(v));
        match ty {
            "Integer" => (v.is_i64() || v.is_u64()).then_some(()).ok_or_else(wrong),
            "Float" => v.is_number().then_some(()).ok_or_else(wrong),
            "Boolean" | "True" => v.is_boolean().then_some(()).ok_or_else(wrong),
            "String" => v.is_string().then_some(()).ok_or_else(wrong),
            "InputFile" => Err(format!("{path} must be uploaded as a file (multipart/form-data)")),
            _ => {
                if let Some(inner) = ty.strip_prefix("Array of ") {
                    let items = v.as_array().ok_or_else(wrong)?;
                    for (i, item) in items.iter().enumerate() {
                        self.check_type(item, inner, &format!("{path}[{i}]"))?;
                    }
                    return Ok(());
                }
                match self.types.get(ty) {
                    Some(TypeSpec::Object(fields)) => self.check_object(v, ty, fields, path),
                    Some(TypeSpec::Union(variants)) => self.check(v, variants, path),
                    None => Err(format!("{path}: type {ty} is not in the spec table")),
                }
            }
        }
    }

    fn check_object(&self, v: &Value, ty: &str, fields: &[FieldSpec], path: &str) -> Result<(), String> {
        let obj = v.as_object().ok_or_else(|| format!("{path} must be {ty}, got {}", json_kind(v)))?;
        for key in obj.keys() {
            if !fields.iter().any(|f| &f.name == key) {
                return Err(format!("{path}: unknown field \"{key}\" in {ty}"));
            }
        }
        for f in fields {
            let sub = if path.is_empty() { f.name.clone() } else { format!("{path}.{}", f.name) };
            match obj.get(&f.name) {
                None | Some(Value::Null) if f.required => {
                    return Err(format!("{sub}: required field of {ty} is missing"));
                }
                None | Some(Value::Null) => {}
                Some(x) => {
                    self.check(x, &f.types, &sub)?;
                    if let Some(c) = &f.constant
                        && x.as_str() != Some(c.as_str())
                    {
                        return Err(format!("{sub} must be \"{c}\" in {ty}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// For an object checked against several object types: the variant whose discriminator
    /// matches, else the one that knows most of the object's keys.
    fn best_variant(&self, v: &Value, types: &[String]) -> Option<String> {
        let obj = v.as_object()?;
        let mut leaves = Vec::new();
        self.object_leaves(types, &mut leaves, 0);
        let mut best: Option<(usize, String)> = None;
        for name in leaves {
            let Some(TypeSpec::Object(fields)) = self.types.get(&name) else {
                continue;
            };
            let mut score = 0;
            let mut mismatch = false;
            for f in fields {
                if let (Some(c), Some(x)) = (&f.constant, obj.get(&f.name)) {
                    if x.as_str() == Some(c.as_str()) {
                        score += 1000;
                    } else {
                        mismatch = true;
                    }
                }
            }
            if mismatch {
                continue;
            }
            score += obj.keys().filter(|k| fields.iter().any(|f| &f.name == *k)).count();
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, name));
            }
        }
        best.map(|(_, n)| n)
    }

    fn object_leaves(&self, types: &[String], out: &mut Vec<String>, depth: usize) {
        if depth > 8 {
            return;
        }
        for t in types {
            match self.types.get(t) {
                Some(TypeSpec::Object(_)) => out.push(t.clone()),
                Some(TypeSpec::Union(v)) => self.object_leaves(v, out, depth + 1),
                None => {}
            }
        }
    }

    /// Checks a whole object against a named type (used to self-check the emulator's output).
    #[cfg(test)]
    pub fn check_named(&self, v: &Value, ty: &str) -> Result<(), String> {
        self.check_type(v, ty, ty)
    }
}

/// A short name of a JSON value's kind for error messages.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_f64() => "Float",
        Value::Number(_) => "Integer",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

/// Builds the shipped table text from api.json (deterministic: sorted maps, one entry a line).
#[cfg(test)]
pub(crate) fn generate(api_json: &str) -> Result<String, String> {
    let api: Value = serde_json::from_str(api_json).map_err(|e| e.to_string())?;
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let fields_of = |v: &Value, discriminated: bool| -> Vec<String> {
        let Some(list) = v.get("fields").and_then(Value::as_array) else {
            return Vec::new();
        };
        list.iter()
            .map(|f| {
                let types: Vec<String> = f
                    .get("types")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default();
                let constant =
                    if discriminated && types == ["String"] { discriminator(&str_of(f, "description")) } else { None };
                FieldSpec {
                    name: str_of(f, "name"),
                    types,
                    required: f.get("required").and_then(Value::as_bool).unwrap_or(false),
                    constant,
                }
                .render()
            })
            .collect()
    };
    let mut file = SpecFile {
        source: format!(
            "Derived from api.json of github.com/PaulSonOfLars/telegram-bot-api-spec ({}, {}), \
             scraped from https://core.telegram.org/bots/api",
            str_of(&api, "version"),
            str_of(&api, "release_date")
        ),
        license: "MIT, Copyright (c) 2020 Paul Larsen; full text in BOTAPI-LICENSE beside this \
                  file. Descriptions originate from Telegram's public Bot API documentation."
            .to_owned(),
        regenerate: "cargo test emulator::spec::tests::regenerate_spec_table -- --ignored".to_owned(),
        version: str_of(&api, "version"),
        release_date: str_of(&api, "release_date"),
        methods: BTreeMap::new(),
        types: BTreeMap::new(),
        unions: BTreeMap::new(),
    };
    let methods = api.get("methods").and_then(Value::as_object).ok_or("no methods")?;
    for (name, m) in methods {
        file.methods.insert(name.clone(), fields_of(m, false));
    }
    let types = api.get("types").and_then(Value::as_object).ok_or("no types")?;
    for (name, t) in types {
        if let Some(subs) = t.get("subtypes").and_then(Value::as_array) {
            let subs = subs.iter().filter_map(Value::as_str).map(str::to_owned).collect();
            file.unions.insert(name.clone(), subs);
        } else {
            let discriminated = t.get("subtype_of").is_some();
            file.types.insert(name.clone(), fields_of(t, discriminated));
        }
    }
    Ok(render_file(&file))
}

/// `"…, must be photo"` / `"…, always \"creator\""` → the fixed value.
#[cfg(test)]
fn discriminator(description: &str) -> Option<String> {
    let at = ["must be ", "always "].iter().filter_map(|m| description.rfind(m).map(|i| i + m.len())).max()?;
    let value = description[at..].trim().trim_matches(|c| matches!(c, '"' | '“' | '”'));
    (!value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then(|| value.to_owned())
}

#[cfg(test)]
fn render_file(f: &SpecFile) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let map = |m: &BTreeMap<String, Vec<String>>| -> String {
        let lines: Vec<String> =
            m.iter().map(|(k, v)| format!("    {}: {}", q(k), serde_json::to_string(v).unwrap_or_default())).collect();
        lines.join(",\n")
    };
    format!(
        "{{\n  \"source\": {},\n  \"license\": {},\n  \"regenerate\": {},\n  \"version\": {},\n  \
         \"release_date\": {},\n  \"methods\": {{\n{}\n  }},\n  \"types\": {{\n{}\n  }},\n  \
         \"unions\": {{\n{}\n  }}\n}}\n",
        q(&f.source),
        q(&f.license),
        q(&f.regenerate),
        q(&f.version),
        q(&f.release_date),
        map(&f.methods),
        map(&f.types),
        map(&f.unions)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api_json_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/telegram-bot-api/api.json")
    }

    #[test]
    fn spec_table_matches_api_json() {
        let api = std::fs::read_to_string(api_json_path()).expect("read shared api.json");
        let generated = generate(&api).expect("generate");
        assert!(
            generated == SPEC_JSON,
            "src/emulator/botapi_spec.json is stale; run: cargo test \
             emulator::spec::tests::regenerate_spec_table -- --ignored"
        );
    }

    /// Rewrites `botapi_spec.json` from the shared api.json.
    #[test]
    #[ignore]
    fn regenerate_spec_table() {
        let api = std::fs::read_to_string(api_json_path()).expect("read shared api.json");
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/emulator/botapi_spec.json");
        std::fs::write(out, generate(&api).expect("generate")).expect("write table");
    }

    #[test]
    fn every_type_reference_resolves() {
        let spec = Spec::embedded().expect("embedded spec");
        let known = |t: &str| -> bool {
            let mut t = t;
            while let Some(inner) = t.strip_prefix("Array of ") {
                t = inner;
            }
            matches!(t, "Integer" | "Float" | "Boolean" | "True" | "String" | "InputFile") || spec.types.contains_key(t)
        };
        let mut missing = Vec::new();
        for m in spec.methods.values() {
            for f in &m.fields {
                missing.extend(f.types.iter().filter(|t| !known(t)).cloned());
            }
        }
        for t in spec.types.values() {
            match t {
                TypeSpec::Object(fields) => {
                    for f in fields {
                        missing.extend(f.types.iter().filter(|t| !known(t)).cloned());
                    }
                }
                TypeSpec::Union(v) => missing.extend(v.iter().filter(|t| !known(t)).cloned()),
            }
        }
        assert!(missing.is_empty(), "unresolved types: {missing:?}");
        assert!(spec.method("SENDMESSAGE").is_some_and(|m| m.name == "sendMessage"));
        assert!(spec.methods.len() > 150, "{}", spec.methods.len());
    }

    #[test]
    fn discriminators_are_extracted() {
        assert_eq!(discriminator("Scope type, must be default").as_deref(), Some("default"));
        assert_eq!(discriminator("The member's status in the chat, always \"creator\"").as_deref(), Some("creator"));
        assert_eq!(discriminator("Type of the result, must be mpeg4_gif").as_deref(), Some("mpeg4_gif"));
        assert_eq!(discriminator("Text of the message to be sent, 1-4096 characters"), None);
    }

    #[test]
    fn nested_union_variants_are_checked() {
        let spec = Spec::embedded().expect("embedded spec");
        let types = vec![
            "InlineKeyboardMarkup".to_owned(),
            "ReplyKeyboardMarkup".to_owned(),
            "ReplyKeyboardRemove".to_owned(),
            "ForceReply".to_owned(),
        ];
        let ok = json!({"inline_keyboard": [[{"text": "a", "callback_data": "x"}]]});
        assert_eq!(spec.check(&ok, &types, "reply_markup"), Ok(()));
        let bad = json!({"inline_keyboard": [[{"text": "a", "callback_dat": "x"}]]});
        let err = spec.check(&bad, &types, "reply_markup").expect_err("unknown field");
        assert!(err.contains("callback_dat") && err.contains("InlineKeyboardButton"), "{err}");
        let remove = json!({"remove_keyboard": true});
        assert_eq!(spec.check(&remove, &types, "reply_markup"), Ok(()));
        // Abstract type with a discriminator.
        let scope = vec!["BotCommandScope".to_owned()];
        assert_eq!(spec.check(&json!({"type": "chat", "chat_id": 5}), &scope, "scope"), Ok(()));
        let err = spec.check(&json!({"type": "chat"}), &scope, "scope").expect_err("missing");
        assert!(err.contains("chat_id"), "{err}");
        let err = spec.check(&json!({"type": "nope"}), &scope, "scope").expect_err("bad type");
        assert!(err.contains("scope"), "{err}");
    }
}
