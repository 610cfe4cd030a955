//! The one layering rule, flag > environment > file > default, and the
//! range checks every number and duration goes through.
//!
//! A setting is a [`Setting`]: its flag, its variables and its file key, and
//! what it accepts. [`Setting::resolve`] takes the value of the highest layer
//! that sets it and parses only that one, under the name the user wrote it
//! with, so an error names `--interval`, `OTEL_METRIC_EXPORT_INTERVAL` or
//! `interval` and never a layer the user did not touch.

use std::fmt;
use std::time::Duration;

use super::env::Vars;
use super::{invalid, ConfigError};

/// Where a value was found; earlier variants win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Layer {
    Flag,
    Env,
    File,
}

/// A value as the user wrote it, and the flag, variable or key it came from.
#[derive(Clone, Debug)]
pub(super) struct Given {
    pub name: &'static str,
    pub layer: Layer,
    pub text: String,
}

impl Given {
    pub fn new(name: &'static str, layer: Layer, text: impl Into<String>) -> Self {
        Given {
            name,
            layer,
            text: text.into(),
        }
    }
}

/// How a setting's text becomes its value, range checks included.
pub(super) trait Accept {
    type Value;
    fn accept(&self, given: &Given) -> Result<Self::Value, ConfigError>;
    /// The accepted range as the documentation states it (`env`: as the
    /// environment writes it), if it has one.
    #[cfg(test)]
    fn range_doc(&self, _env: bool) -> Option<String> {
        None
    }
}

/// Settings with a fixed set of values or a syntax (protocol, log filter,
/// address...): a function of the name and the text.
impl<T> Accept for fn(&str, &str) -> Result<T, ConfigError> {
    type Value = T;
    fn accept(&self, given: &Given) -> Result<T, ConfigError> {
        self(given.name, &given.text)
    }
}

/// Where one setting can be given, and what it accepts.
pub(super) struct Setting<A> {
    pub flag: Option<&'static str>,
    /// Highest precedence first (signal-specific before generic).
    pub env: &'static [&'static str],
    /// Dotted path in the config file.
    pub key: &'static str,
    pub accepts: A,
}

impl<A: Accept> Setting<A> {
    /// The value of the highest layer that sets this setting, parsed and
    /// checked under that layer's name; `None` when no layer sets it.
    /// `flag` and `file` are what the command line and the file hold.
    pub fn resolve(
        &self,
        flag: Option<&str>,
        vars: &Vars<'_>,
        file: Option<impl ToString>,
    ) -> Result<Option<A::Value>, ConfigError> {
        self.pick(flag, vars, file)
            .map(|given| self.accepts.accept(&given))
            .transpose()
    }

    /// [`Self::resolve`] for a value found elsewhere (a merged layer).
    pub fn accept(&self, given: &Given) -> Result<A::Value, ConfigError> {
        self.accepts.accept(given)
    }
}

impl<A> Setting<A> {
    /// The highest layer's value, unparsed.
    pub fn pick(
        &self,
        flag: Option<&str>,
        vars: &Vars<'_>,
        file: Option<impl ToString>,
    ) -> Option<Given> {
        self.in_flag(flag)
            .or_else(|| self.in_env(vars))
            .or_else(|| self.in_file(file))
    }

    pub fn in_flag(&self, flag: Option<&str>) -> Option<Given> {
        let (name, text) = self.flag.zip(flag)?;
        Some(Given::new(name, Layer::Flag, text))
    }

    pub fn in_env(&self, vars: &Vars<'_>) -> Option<Given> {
        let (name, text) = vars.first(self.env)?;
        Some(Given::new(name, Layer::Env, text))
    }

    pub fn in_file(&self, file: Option<impl ToString>) -> Option<Given> {
        Some(Given::new(self.key, Layer::File, file?.to_string()))
    }
}

/// An inclusive range of whole numbers or durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Bounds<T> {
    pub min: T,
    pub max: T,
}

/// How a value of the range is written (durations: `1h 30m`).
pub(super) trait Show: Copy + PartialOrd {
    fn show(self) -> String;
}

impl Show for u64 {
    fn show(self) -> String {
        self.to_string()
    }
}

impl Show for Duration {
    fn show(self) -> String {
        humantime::format_duration(self).to_string()
    }
}

impl<T: Show> Bounds<T> {
    pub fn check(&self, name: &str, v: T) -> Result<T, ConfigError> {
        if v < self.min || v > self.max {
            return Err(self.out_of_range(name, &v.show(), ""));
        }
        Ok(v)
    }

    fn out_of_range(&self, name: &str, got: &str, unit: &str) -> ConfigError {
        let (min, max) = (self.min.show(), self.max.show());
        invalid(
            name,
            format!("must be between {min} and {max}{unit}, got {got}"),
        )
    }
}

impl<T: Show> fmt::Display for Bounds<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.min.show(), self.max.show())
    }
}

/// A whole number too large for u64 is out of range, not malformed.
fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl Accept for Bounds<u64> {
    type Value = u64;
    fn accept(&self, given: &Given) -> Result<u64, ConfigError> {
        let raw = &given.text;
        let text = raw.trim();
        match text.parse() {
            Ok(n) => self.check(given.name, n),
            Err(_) if all_digits(text) => Err(self.out_of_range(given.name, text, "")),
            Err(_) => Err(invalid(
                given.name,
                format!("expected a whole number from {self}, got {raw:?}"),
            )),
        }
    }
    #[cfg(test)]
    fn range_doc(&self, _env: bool) -> Option<String> {
        Some(self.to_string())
    }
}

impl Bounds<Duration> {
    /// The range in whole milliseconds, as OTel variables write durations.
    fn in_millis(&self) -> Bounds<u64> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Bounds {
            min: ms(self.min),
            max: ms(self.max),
        }
    }
}

/// Flags and file keys take humantime durations ("10s", "1m 30s"); OTel
/// variables, whole milliseconds (the OTel convention).
impl Accept for Bounds<Duration> {
    type Value = Duration;
    fn accept(&self, given: &Given) -> Result<Duration, ConfigError> {
        let raw = &given.text;
        let text = raw.trim();
        if given.layer == Layer::Env {
            let ms = self.in_millis();
            return match text.parse() {
                Ok(n) if n < ms.min || n > ms.max => {
                    Err(ms.out_of_range(given.name, text, " milliseconds"))
                }
                Ok(n) => Ok(Duration::from_millis(n)),
                Err(_) if all_digits(text) => {
                    Err(ms.out_of_range(given.name, text, " milliseconds"))
                }
                Err(_) => Err(invalid(
                    given.name,
                    format!("expected a whole number of milliseconds from {ms}, got {raw:?}"),
                )),
            };
        }
        let d = humantime::parse_duration(text).map_err(|e| {
            invalid(
                given.name,
                format!(
                    "expected a duration like \"10s\" or \"500ms\" from {self}, got {raw:?} ({e})"
                ),
            )
        })?;
        self.check(given.name, d)
    }
    #[cfg(test)]
    fn range_doc(&self, env: bool) -> Option<String> {
        Some(if env {
            self.in_millis().to_string()
        } else {
            self.to_string()
        })
    }
}

/// What the documentation test needs of a setting, whatever it accepts.
#[cfg(test)]
pub(super) trait Documented {
    fn flag(&self) -> Option<&'static str>;
    fn env(&self) -> &'static [&'static str];
    fn key(&self) -> &'static str;
    fn range_doc(&self, env: bool) -> Option<String>;
}

#[cfg(test)]
impl<A: Accept> Documented for Setting<A> {
    fn flag(&self) -> Option<&'static str> {
        self.flag
    }
    fn env(&self) -> &'static [&'static str] {
        self.env
    }
    fn key(&self) -> &'static str {
        self.key
    }
    fn range_doc(&self, env: bool) -> Option<String> {
        self.accepts.range_doc(env)
    }
}
