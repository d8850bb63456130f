//! The archive's look: minijinja templates, interface texts and static files, read at run
//! time from `archive-templates/` (or `[archive] templates`), so that a list owner can
//! restyle the archive without rebuilding vraagbaak. Any file missing there falls back to
//! the copy compiled into the binary, so the archive also works from any directory.

use crate::config::{Config, Language};
use minijinja::Environment;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

macro_rules! shipped {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../archive-templates/", $name)),
        )
    };
}

/// Page templates: (file name, built-in text).
const PAGES: &[(&str, &str)] = &[
    shipped!("base.html"),
    shipped!("index.html"),
    shipped!("month.html"),
    shipped!("thread.html"),
    shipped!("moved.html"),
    shipped!("tag.html"),
    shipped!("tags.html"),
    shipped!("stats.html"),
    shipped!("search.html"),
    shipped!("atom.xml"),
];

/// Files copied as they are into each list's `static/`.
const STATIC: &[(&str, &str)] = &[
    shipped!("static/style.css"),
    shipped!("static/search.js"),
    shipped!("static/favicon.svg"),
];

const I18N: &[(&str, &str)] = &[shipped!("i18n/nl.toml"), shipped!("i18n/en.toml")];

/// How a language writes a date and time.
struct DateNames {
    format: String,
    day_format: String,
    /// Monday first.
    weekdays: Vec<String>,
    months: Vec<String>,
}

/// A list of exactly `n` names under `key` in an i18n table.
fn names(table: &toml::Table, key: &str, n: usize, file: &Path) -> Result<Vec<String>, String> {
    match table.get(key) {
        Some(toml::Value::Array(a)) if a.len() == n && a.iter().all(|v| v.is_str()) => Ok(a
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect()),
        _ => Err(format!(
            "{}: key `{key}`: expected a list of {n} names",
            file.display()
        )),
    }
}

/// The loaded templates, texts and static files.
pub struct Templates {
    pub env: Environment<'static>,
    texts: BTreeMap<&'static str, minijinja::Value>,
    months: BTreeMap<&'static str, Vec<String>>,
    dates: BTreeMap<&'static str, DateNames>,
    pub statics: Vec<(&'static str, Vec<u8>)>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

/// The directory templates are read from, when it exists.
pub fn dir(cfg: &Config) -> PathBuf {
    cfg.archive
        .templates
        .clone()
        .unwrap_or_else(|| PathBuf::from("archive-templates"))
}

fn read(dir: &Path, name: &str, builtin: &str) -> Result<String, String> {
    let p = dir.join(name);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(builtin.to_string()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

impl Templates {
    /// Loads every template and checks that it compiles; the error names the file.
    pub fn load(cfg: &Config) -> Result<Templates, String> {
        let dir = dir(cfg);
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        // Like minijinja's HTML escaping, but `/` stays as it is: relative links read
        // `../t/1.html`, not `..&#x2f;t&#x2f;1.html` (both are safe; `/` is not special
        // inside quoted attributes or text).
        env.set_formatter(|out, state, value| {
            if state.auto_escape() != minijinja::AutoEscape::Html
                || value.is_safe()
                || value.is_undefined()
                || value.is_none()
            {
                return minijinja::escape_formatter(out, state, value);
            }
            let s = match value.as_str() {
                Some(s) => std::borrow::Cow::Borrowed(s),
                None => std::borrow::Cow::Owned(value.to_string()),
            };
            out.write_str(&super::render::escape(&s)).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            })
        });
        // "1 bericht", "3 berichten": `{{ n | count(t.message, t.messages) }}`.
        env.add_filter("count", |n: i64, one: String, many: String| {
            format!("{n} {}", if n == 1 { one } else { many })
        });
        for (name, builtin) in PAGES {
            let text = read(&dir, name, builtin)?;
            env.add_template_owned(*name, text)
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
        }
        let mut texts = BTreeMap::new();
        let mut months = BTreeMap::new();
        let mut dates = BTreeMap::new();
        for (name, builtin) in I18N {
            let text = read(&dir, name, builtin)?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
            // A text missing from an edited copy falls back to the built-in one.
            let builtin_table: toml::Table = toml::from_str(builtin).unwrap_or_default();
            let mut merged = builtin_table;
            merged.extend(table);
            let file = dir.join(name);
            let m = names(&merged, "months", 12, &file)?;
            let date_names = DateNames {
                format: merged
                    .get("date_format")
                    .and_then(|v| v.as_str())
                    .unwrap_or("{day} {month} {year}, {hour}:{minute}")
                    .to_string(),
                day_format: merged
                    .get("day_format")
                    .and_then(|v| v.as_str())
                    .unwrap_or("{day} {month} {year}")
                    .to_string(),
                weekdays: names(&merged, "weekdays_short", 7, &file)?,
                months: names(&merged, "months_short", 12, &file)?,
            };
            let lang = if name.contains("/nl") { "nl" } else { "en" };
            months.insert(lang, m);
            dates.insert(lang, date_names);
            texts.insert(lang, minijinja::Value::from_serialize(&merged));
        }
        let mut statics = Vec::new();
        for (name, builtin) in STATIC {
            let p = dir.join(name);
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => builtin.as_bytes().to_vec(),
                Err(e) => return Err(format!("{}: {e}", p.display())),
            };
            statics.push((*name, bytes));
        }
        Ok(Templates {
            env,
            texts,
            months,
            dates,
            statics,
        })
    }

    /// The interface texts (`t` in templates) of a language.
    pub fn texts(&self, lang: Language) -> minijinja::Value {
        self.texts.get(lang.code()).cloned().unwrap_or_default()
    }

    /// The texts used inside rendered messages.
    pub fn labels(&self, lang: Language) -> super::render::Labels {
        let t = self.texts(lang);
        let get = |k: &str, d: String| {
            t.get_attr(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or(d)
        };
        let d = super::render::Labels::default();
        super::render::Labels {
            quoted_lines: get("quoted_lines", d.quoted_lines),
            attachments: get("attachments", d.attachments),
            forwarded_message: get("forwarded_message", d.forwarded_message),
            problem_undecodable: get("problem_undecodable", d.problem_undecodable),
            problem_truncated: get("problem_truncated", d.problem_truncated),
            problem_too_deep: get("problem_too_deep", d.problem_too_deep),
            problem_too_many_parts: get("problem_too_many_parts", d.problem_too_many_parts),
            problem_unreadable: get("problem_unreadable", d.problem_unreadable),
            signature_omitted: get("signature_omitted", d.signature_omitted),
            disclaimer: get("disclaimer", d.disclaimer),
            image: get("image", d.image),
        }
    }

    /// "di 6 okt. 2026, 09:12" / "Tue 6 Oct 2026, 09:12": the `date_format` of the
    /// language, with `{weekday}`, `{day}`, `{month}`, `{year}`, `{hour}`, `{minute}`
    /// (the short names from `weekdays_short` and `months_short`).
    pub fn date_label(&self, lang: Language, d: chrono::DateTime<chrono_tz::Tz>) -> String {
        match self.dates.get(lang.code()) {
            Some(names) => Self::fill(&names.format, names, d),
            None => d.format("%Y-%m-%d %H:%M").to_string(),
        }
    }

    /// The day alone, for search results: "7 jul. 2026" (`day_format`).
    pub fn day_label(&self, lang: Language, d: chrono::DateTime<chrono_tz::Tz>) -> String {
        match self.dates.get(lang.code()) {
            Some(names) => Self::fill(&names.day_format, names, d),
            None => d.format("%Y-%m-%d").to_string(),
        }
    }

    fn fill(format: &str, names: &DateNames, d: chrono::DateTime<chrono_tz::Tz>) -> String {
        use chrono::{Datelike, Timelike};
        let weekday = names
            .weekdays
            .get(d.weekday().num_days_from_monday() as usize)
            .map_or("", String::as_str);
        let month = names
            .months
            .get(d.month0() as usize)
            .map_or("", String::as_str);
        format
            .replace("{weekday}", weekday)
            .replace("{day}", &d.day().to_string())
            .replace("{month}", month)
            .replace("{year}", &d.year().to_string())
            .replace("{hour}", &format!("{:02}", d.hour()))
            .replace("{minute}", &format!("{:02}", d.minute()))
    }

    /// "november 2026" for "2026-11".
    pub fn month_label(&self, lang: Language, month: &str) -> String {
        let (y, m) = month.split_once('-').unwrap_or((month, ""));
        let name = m.parse::<usize>().ok().and_then(|i| {
            self.months
                .get(lang.code())?
                .get(i.checked_sub(1)?)
                .cloned()
        });
        match name {
            Some(n) => format!("{n} {y}"),
            None => month.to_string(),
        }
    }

    pub fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| format!("template {name}: {e:#}"))
    }
}
