//! `CacheGuardOptions` (the argument of `checkVersion` and `new CacheGuard`) → the core's
//! [`GuardConfig`] and what the driver needs. Every field is optional; unknown fields are
//! ignored. Defaults: the page's `<meta name="app-version">`, `/api/version`, every cache
//! and registration (the seed's behaviour), one attempt per target version, re-check when
//! the page becomes visible (windows only).

use crate::core::pwa::{GuardConfig, Ownership, DEFAULT_STORAGE_KEY};
use crate::wasm::error;
use crate::wasm::pwa::host;
use js_sys::{Array, Function};
use wasm_bindgen::{JsCast, JsValue};

/// Default `versionUrl`.
pub(crate) const DEFAULT_VERSION_URL: &str = "/api/version";

/// The JS options object, read field by field with `Reflect` (no serde in the PWA entry:
/// issue 15's size budget). `undefined` and `null` fields are absent.
#[derive(Default)]
struct RawOptions {
    current_version: Option<String>,
    version_url: Option<String>,
    scope: Option<String>,
    cache_prefix: JsValue,
    before_purge: JsValue,
    on_event: JsValue,
    recheck_on_visible: Option<bool>,
    max_attempts: Option<f64>,
    retry_after_ms: Option<f64>,
    storage_key: Option<String>,
    navigate_clients: Option<bool>,
    claim_window_ms: Option<f64>,
}

impl RawOptions {
    /// Reads `options` (an object).
    ///
    /// Errors: `invalid_argument` naming the first field of the wrong type.
    fn read(options: &JsValue) -> Result<RawOptions, JsValue> {
        let field = |name: &str| host::get(options, name);
        let string = |name: &str| typed(name, field(name), JsValue::as_string, "a string");
        let boolean = |name: &str| typed(name, field(name), JsValue::as_bool, "a boolean");
        let number = |name: &str| typed(name, field(name), JsValue::as_f64, "a number");
        let any = |name: &str| field(name).unwrap_or(JsValue::UNDEFINED);
        Ok(RawOptions {
            current_version: string("currentVersion")?,
            version_url: string("versionUrl")?,
            scope: string("scope")?,
            cache_prefix: any("cachePrefix"),
            before_purge: any("beforePurge"),
            on_event: any("onEvent"),
            recheck_on_visible: boolean("recheckOnVisible")?,
            max_attempts: number("maxAttempts")?,
            retry_after_ms: number("retryAfterMs")?,
            storage_key: string("storageKey")?,
            navigate_clients: boolean("navigateClients")?,
            claim_window_ms: number("claimWindowMs")?,
        })
    }
}

/// `value` (absent: `None`) as `T`, or `invalid_argument` "`name` must be `what`".
fn typed<T>(
    name: &str,
    value: Option<JsValue>,
    get: impl Fn(&JsValue) -> Option<T>,
    what: &str,
) -> Result<Option<T>, JsValue> {
    match value {
        None => Ok(None),
        Some(v) => get(&v).map(Some).ok_or_else(|| {
            error::invalid_argument(&format!(
                "invalid CacheGuard options: `{name}` must be {what}, got {}",
                show(&v)
            ))
        }),
    }
}

/// `value.toString()` (the browser formats numbers: no float formatting in the wasm); never
/// called with `undefined` or `null`.
fn show(value: &JsValue) -> String {
    String::from(value.unchecked_ref::<js_sys::Object>().to_string())
}

/// Parsed options.
pub(crate) struct GuardOptions {
    /// The version this context runs, if given (how it runs in a service worker).
    pub(crate) current_version: Option<String>,
    /// Absolute URL of the version endpoint (without the cache-busting parameter).
    pub(crate) version_url: String,
    /// Decision rules and ownership (scope resolved to an absolute URL).
    pub(crate) config: GuardConfig,
    /// The app's hook, run before purging and before reloading.
    pub(crate) before_purge: Option<Function>,
    /// Listener given in the options.
    pub(crate) on_event: Option<Function>,
    /// Re-check on `visibilitychange` → visible.
    pub(crate) recheck_on_visible: bool,
    /// Record cache name, `localStorage` key and BroadcastChannel name.
    pub(crate) storage_key: String,
    /// In a service worker: also navigate window clients to reload them.
    pub(crate) navigate_clients: bool,
}

/// Reads the arguments of `checkVersion` / `new CacheGuard` in the current global scope:
/// `(options?)` or, like `P3Client.connect`, `(baseUrl, options?)`. `undefined`/`null`
/// options: all defaults.
///
/// With a `baseUrl` (`http(s)://` origin of the server, optionally with a path prefix) the
/// version endpoint is `{baseUrl}/api/version`, and a `versionUrl` starting with one `/` is
/// appended to `baseUrl` the same way (other relative ones resolve against `{baseUrl}/`);
/// without one, `versionUrl` resolves against the scope's location.
///
/// Errors: `invalid_argument` for a field of the wrong type or value, a `baseUrl` that is not
/// `http(s)://`, or a first argument that is neither a string nor an options object.
pub(crate) fn parse_args(first: &JsValue, second: &JsValue) -> Result<GuardOptions, JsValue> {
    match first.as_string() {
        Some(base) => parse(Some(&server_base(&base)?), second),
        None if first.is_undefined() || first.is_null() => parse(None, second),
        None if first.is_object() && second.is_undefined() => parse(None, first),
        None => Err(error::invalid_argument(
            "expected (baseUrl, options?) or (options?): `baseUrl` must be a string",
        )),
    }
}

/// Reads `options` (`undefined`/`null`: all defaults) in the current global scope; `base`:
/// the normalized server base URL, if given (see [`parse_args`]).
///
/// Errors: `invalid_argument` for a field of the wrong type or value.
fn parse(base_url: Option<&str>, options: &JsValue) -> Result<GuardOptions, JsValue> {
    let o: RawOptions = if options.is_undefined() || options.is_null() {
        RawOptions::default()
    } else {
        RawOptions::read(options)?
    };
    let base = host::location_href();
    let version_url = match (base_url, o.version_url.as_deref()) {
        (Some(server), v) => {
            let v = v.unwrap_or(DEFAULT_VERSION_URL);
            if v.starts_with('/') && !v.starts_with("//") {
                resolve("versionUrl", &format!("{server}{v}"), None)?
            } else {
                resolve("versionUrl", v, Some(&format!("{server}/")))?
            }
        }
        (None, v) => resolve(
            "versionUrl",
            v.unwrap_or(DEFAULT_VERSION_URL),
            base.as_deref(),
        )?,
    };
    let scope = match o.scope.as_deref() {
        Some(s) => Some(resolve("scope", s, base.as_deref())?),
        None => None,
    };
    let storage_key = o
        .storage_key
        .unwrap_or_else(|| DEFAULT_STORAGE_KEY.to_owned());
    if storage_key.is_empty() {
        return Err(error::invalid_argument("`storageKey` must not be empty"));
    }
    let mut config = GuardConfig {
        ownership: Ownership {
            scope,
            cache_prefixes: prefixes(&o.cache_prefix)?,
            record_cache: storage_key.clone(),
        },
        ..GuardConfig::default()
    };
    if let Some(n) = o.max_attempts {
        if !(n.fract() == 0.0 && (1.0..=100.0).contains(&n)) {
            return Err(error::invalid_argument(&format!(
                "`maxAttempts` must be an integer 1..=100, got {}",
                show(&JsValue::from_f64(n))
            )));
        }
        config.max_attempts = n as u32;
    }
    if let Some(ms) = o.retry_after_ms {
        config.retry_after_ms = Some(millis("retryAfterMs", ms, 1)?);
    }
    if let Some(ms) = o.claim_window_ms {
        config.claim_window_ms = millis("claimWindowMs", ms, 0)?;
    }
    let current_version = o.current_version.filter(|v| !v.trim().is_empty());
    Ok(GuardOptions {
        current_version,
        version_url,
        config,
        before_purge: function("beforePurge", o.before_purge)?,
        on_event: function("onEvent", o.on_event)?,
        recheck_on_visible: o.recheck_on_visible.unwrap_or(true),
        storage_key,
        navigate_clients: o.navigate_clients.unwrap_or(false),
    })
}

/// A server base URL as `P3Client.connect` takes it (`http://` or `https://`, optionally with a
/// path prefix), without its trailing `/`. Checked here rather than with the driver's helper:
/// a build with only the cache guard has no driver.
///
/// Errors: `invalid_argument` for anything else.
fn server_base(url: &str) -> Result<String, JsValue> {
    let base = url.trim().trim_end_matches('/');
    let http = web_sys::Url::new(base)
        .map(|u| matches!(u.protocol().as_str(), "http:" | "https:"))
        .unwrap_or(false);
    if http {
        Ok(base.to_owned())
    } else {
        Err(error::invalid_argument(&format!(
            "the server's base URL must start with http:// or https://, got \"{url}\""
        )))
    }
}

/// `url` resolved against the global scope's location (absolute URLs pass through).
fn resolve(name: &str, url: &str, base: Option<&str>) -> Result<String, JsValue> {
    let parsed = match base {
        Some(b) => web_sys::Url::new_with_base(url, b),
        None => web_sys::Url::new(url),
    };
    parsed
        .map(|u| u.href())
        .map_err(|_| error::invalid_argument(&format!("`{name}` is not a valid URL: \"{url}\"")))
}

/// `cachePrefix`: a string, an array of strings, or absent (every cache).
fn prefixes(v: &JsValue) -> Result<Vec<String>, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(Vec::new());
    }
    let bad =
        || error::invalid_argument("`cachePrefix` must be a non-empty string or an array of them");
    let items: Vec<JsValue> = if Array::is_array(v) {
        v.unchecked_ref::<Array>().iter().collect()
    } else {
        vec![v.clone()]
    };
    items
        .iter()
        .map(|p| p.as_string().filter(|s| !s.is_empty()).ok_or_else(bad))
        .collect()
}

/// `ms` rounded, when finite and ≥ `min` (0 or 1).
fn millis(name: &str, ms: f64, min: u8) -> Result<u64, JsValue> {
    if ms.is_finite() && ms >= f64::from(min) {
        Ok(ms.round() as u64)
    } else {
        Err(error::invalid_argument(&format!(
            "`{name}` must be a number of ms ≥ {min}, got {}",
            show(&JsValue::from_f64(ms))
        )))
    }
}

fn function(name: &str, v: JsValue) -> Result<Option<Function>, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.dyn_into::<Function>()
        .map(Some)
        .map_err(|_| error::invalid_argument(&format!("`{name}` must be a function")))
}
