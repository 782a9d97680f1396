//! Sign-In with Ethereum ([EIP-4361]): a strict parser of the message text and the
//! verification of its [EIP-191] `personal_sign` signature (secp256k1 public-key recovery with
//! `k256`, Keccak-256 with `sha3`), then the checks of the message's fields against the
//! server's expectations ([`Expected`]).
//!
//! Order of checks (the first failure is the answer, [`AuthReason`]): `malformed` (parse,
//! size, signature encoding) → `wrong_domain` → `wrong_uri` → `wrong_chain` → `expired` /
//! `not_yet_valid` → `bad_signature` → the nonce (`nonce_unknown`, `nonce_reused`, consumed
//! only by a message whose signature verified, so a forged attempt cannot burn an honest
//! client's nonce).
//!
//! The signature is verified over the message bytes exactly as received (not a re-rendering
//! of the parsed fields), so what was signed is what was checked.
//!
//! Why our own parser rather than the `siwe` crate: that crate verifies a re-serialization of
//! the parsed message, has had no release since 2024 and brings `rand` 0.8, `thiserror` 1,
//! `time`, `http` and `iri-string` for what is a 12-line text format (DESIGN.md "Identity").
//!
//! [EIP-4361]: https://eips.ethereum.org/EIPS/eip-4361
//! [EIP-191]: https://eips.ethereum.org/EIPS/eip-191

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use p3_lanes::core::auth::{days_from_civil, AuthReason};
use sha3::{Digest, Keccak256};

/// Largest accepted message, bytes (a real one is ~400).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Most `Resources:` lines accepted.
pub const MAX_RESOURCES: usize = 32;
/// Clock skew tolerated on `Issued At` in the future, ms.
pub const CLOCK_SKEW_MS: u64 = 60_000;

const PREAMBLE: &str = " wants you to sign in with your Ethereum account:";

/// A parsed EIP-4361 message (version 1). Times are ms since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiweMessage {
    /// RFC 3986 authority of the requesting site (without a `scheme://` prefix).
    pub domain: String,
    /// The signer's address.
    pub address: [u8; 20],
    /// The optional statement line.
    pub statement: Option<String>,
    /// The `URI:` line.
    pub uri: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The server-issued nonce.
    pub nonce: String,
    /// `Issued At`, ms.
    pub issued_at_ms: u64,
    /// `Expiration Time`, ms.
    pub expiration_ms: Option<u64>,
    /// `Not Before`, ms.
    pub not_before_ms: Option<u64>,
    /// `Request ID`.
    pub request_id: Option<String>,
    /// `Resources:` URIs.
    pub resources: Vec<String>,
}

/// What the server expects of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected<'a> {
    /// `--siwe-domain`, else the request's `Host`.
    pub domain: &'a str,
    /// Accepted chain ids (`--siwe-chain-ids`).
    pub chain_ids: &'a [u64],
    /// Now, ms since the Unix epoch.
    pub now_ms: u64,
    /// Nonce TTL, ms: an `Issued At` older than this (plus [`CLOCK_SKEW_MS`]) is `expired`.
    pub max_age_ms: u64,
}

/// Parses `text` as an EIP-4361 message. Strict: `\n` line ends only, the EIP's line order,
/// an EIP-55 checksummed address, `Version: 1`, an alphanumeric nonce of at least 8
/// characters, RFC 3339 times, nothing after the last field.
///
/// Errors: [`AuthReason::Malformed`] with what was wrong.
pub fn parse(text: &str) -> Result<SiweMessage, (AuthReason, String)> {
    let bad = |why: &str| (AuthReason::Malformed, why.to_owned());
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(bad("message longer than 4096 bytes"));
    }
    if text.contains('\r') {
        return Err(bad("message lines must end with \\n only"));
    }
    let mut lines = text.split('\n');
    let mut next = || lines.next();
    let first = next().ok_or_else(|| bad("empty message"))?;
    let domain = first.strip_suffix(PREAMBLE).ok_or_else(|| {
        bad("first line must be \"<domain> wants you to sign in with your Ethereum account:\"")
    })?;
    let domain = domain.split_once("://").map_or(domain, |(_, d)| d);
    if domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("domain is not an RFC 3986 authority"));
    }
    let address = parse_address(next().unwrap_or_default()).ok_or_else(|| {
        bad("second line must be the EIP-55 checksummed address (0x + 40 hex digits)")
    })?;
    if next() != Some("") {
        return Err(bad("an empty line must follow the address"));
    }
    let statement = match next() {
        Some("") => None,
        Some(s) => {
            if next() != Some("") {
                return Err(bad("an empty line must follow the statement"));
            }
            Some(s.to_owned())
        }
        None => return Err(bad("message ends after the address")),
    };
    let mut field = |tag: &str| -> Result<String, (AuthReason, String)> {
        next()
            .and_then(|l| l.strip_prefix(tag))
            .and_then(|l| l.strip_prefix(": "))
            .map(str::to_owned)
            .ok_or_else(|| bad(&format!("expected the \"{tag}: \" line")))
    };
    let uri = field("URI")?;
    if uri.is_empty() || uri.contains(char::is_whitespace) || !uri.contains(':') {
        return Err(bad("URI is not an RFC 3986 URI"));
    }
    if field("Version")? != "1" {
        return Err(bad("Version must be 1"));
    }
    let chain = field("Chain ID")?;
    if chain.is_empty() || !chain.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("Chain ID must be a decimal integer"));
    }
    let chain_id = chain
        .parse::<u64>()
        .map_err(|_| bad("Chain ID out of range"))?;
    let nonce = field("Nonce")?;
    if nonce.len() < 8 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad("Nonce must be at least 8 alphanumeric characters"));
    }
    let issued_at_ms =
        parse_rfc3339_ms(&field("Issued At")?).ok_or_else(|| bad("Issued At is not RFC 3339"))?;
    let mut msg = SiweMessage {
        domain: domain.to_owned(),
        address,
        statement,
        uri,
        chain_id,
        nonce,
        issued_at_ms,
        expiration_ms: None,
        not_before_ms: None,
        request_id: None,
        resources: Vec::new(),
    };
    // Optional fields, each at most once and in the EIP's order.
    let mut line = next();
    if let Some(v) = line.and_then(|l| l.strip_prefix("Expiration Time: ")) {
        msg.expiration_ms =
            Some(parse_rfc3339_ms(v).ok_or_else(|| bad("Expiration Time is not RFC 3339"))?);
        line = next();
    }
    if let Some(v) = line.and_then(|l| l.strip_prefix("Not Before: ")) {
        msg.not_before_ms =
            Some(parse_rfc3339_ms(v).ok_or_else(|| bad("Not Before is not RFC 3339"))?);
        line = next();
    }
    if let Some(v) = line.and_then(|l| l.strip_prefix("Request ID: ")) {
        msg.request_id = Some(v.to_owned());
        line = next();
    }
    if line == Some("Resources:") {
        for l in lines.by_ref() {
            let r = l
                .strip_prefix("- ")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| bad("each resource line must be \"- <URI>\""))?;
            if msg.resources.len() == MAX_RESOURCES {
                return Err(bad("more than 32 resources"));
            }
            msg.resources.push(r.to_owned());
        }
        line = None;
    }
    if line.is_some() {
        return Err(bad("unexpected content after the last field"));
    }
    Ok(msg)
}

/// `0x` + 40 hex digits in EIP-55 mixed case (checked), as bytes.
fn parse_address(s: &str) -> Option<[u8; 20]> {
    let hex = s.strip_prefix("0x")?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    (eip55(&out) == s).then_some(out)
}

/// The EIP-55 checksummed text of `addr` (`0x` + 40 hex digits, a letter upper-cased where the
/// matching nibble of `keccak256(lowercase hex)` is ≥ 8).
pub fn eip55(addr: &[u8; 20]) -> String {
    let lower: String = addr.iter().map(|b| format!("{b:02x}")).collect();
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// The Ethereum address of a secp256k1 public key: the last 20 bytes of the Keccak-256 of its
/// uncompressed point without the `0x04` prefix.
pub fn address_of(key: &VerifyingKey) -> [u8; 20] {
    let point = key.to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    out
}

/// The EIP-191 `personal_sign` hash of `message`:
/// `keccak256("\x19Ethereum Signed Message:\n" ‖ decimal byte length ‖ message)`.
pub fn personal_sign_hash(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(b"\x19Ethereum Signed Message:\n");
    h.update(message.len().to_string().as_bytes());
    h.update(message);
    h.finalize().into()
}

/// The address that signed `message` with `signature` (`0x` + 130 hex digits: `r ‖ s ‖ v`,
/// `v` ∈ {0, 1, 27, 28}; a high-`s` signature is normalized, flipping `v`).
///
/// Errors: `malformed` for a signature of another shape; `bad_signature` when no key
/// recovers from it.
pub fn recover(message: &str, signature: &str) -> Result<[u8; 20], (AuthReason, String)> {
    let malformed = || {
        (
            AuthReason::Malformed,
            "signature must be 0x + 130 hex digits (r, s, v)".to_owned(),
        )
    };
    let hex = signature.strip_prefix("0x").ok_or_else(malformed)?;
    if hex.len() != 130 {
        return Err(malformed());
    }
    let mut raw = [0u8; 65];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| malformed())?;
        raw[i] = u8::from_str_radix(text, 16).map_err(|_| malformed())?;
    }
    let mut recid = match raw[64] {
        0 | 27 => 0u8,
        1 | 28 => 1,
        _ => return Err(malformed()),
    };
    let bad = |_| {
        (
            AuthReason::BadSignature,
            "the signature does not verify".to_owned(),
        )
    };
    let mut sig = Signature::from_slice(&raw[..64]).map_err(bad)?;
    if let Some(low) = sig.normalize_s() {
        sig = low;
        recid ^= 1;
    }
    let recid = RecoveryId::from_byte(recid).ok_or_else(malformed)?;
    let hash = personal_sign_hash(message.as_bytes());
    let key = VerifyingKey::recover_from_prehash(&hash, &sig, recid).map_err(bad)?;
    Ok(address_of(&key))
}

/// Checks a signed message against `expected`, except its nonce (the caller consumes it last,
/// see the module docs). Returns the parsed message.
///
/// Errors: the first failed check's [`AuthReason`] and a human text.
pub fn verify(
    text: &str,
    signature: &str,
    expected: &Expected<'_>,
) -> Result<SiweMessage, (AuthReason, String)> {
    let msg = parse(text)?;
    if !msg.domain.eq_ignore_ascii_case(expected.domain) {
        return Err((
            AuthReason::WrongDomain,
            format!(
                "the message is for domain {:?}, this server is {:?}",
                msg.domain, expected.domain
            ),
        ));
    }
    if !uri_on_domain(&msg.uri, expected.domain) {
        return Err((
            AuthReason::WrongUri,
            format!(
                "the message's URI must be http(s)://{}/...",
                expected.domain
            ),
        ));
    }
    if !expected.chain_ids.contains(&msg.chain_id) {
        return Err((
            AuthReason::WrongChain,
            format!(
                "chain id {} is not accepted (accepted: {:?})",
                msg.chain_id, expected.chain_ids
            ),
        ));
    }
    let now = expected.now_ms;
    if msg.expiration_ms.is_some_and(|t| t <= now) {
        return Err((AuthReason::Expired, "past the Expiration Time".into()));
    }
    if msg
        .issued_at_ms
        .saturating_add(expected.max_age_ms + CLOCK_SKEW_MS)
        < now
    {
        return Err((
            AuthReason::Expired,
            "Issued At is older than the nonce TTL".into(),
        ));
    }
    if msg.not_before_ms.is_some_and(|t| t > now) {
        return Err((AuthReason::NotYetValid, "before the Not Before time".into()));
    }
    if msg.issued_at_ms > now.saturating_add(CLOCK_SKEW_MS) {
        return Err((AuthReason::NotYetValid, "Issued At is in the future".into()));
    }
    let signer = recover(text, signature)?;
    if signer != msg.address {
        return Err((
            AuthReason::BadSignature,
            "the signature is not the message address's".into(),
        ));
    }
    Ok(msg)
}

/// Whether `uri` is `http://` or `https://` followed by exactly `domain` and then the end, a
/// `/`, `?` or `#`.
fn uri_on_domain(uri: &str, domain: &str) -> bool {
    let Some(rest) = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
    else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].eq_ignore_ascii_case(domain)
}

/// Parses RFC 3339 `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into ms since the Unix epoch
/// (fraction truncated to ms; `t`/`z` accepted; no leap second; not before 1970).
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in[mo as usize - 1]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let mut i = 19;
    let mut ms = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                ms = ms * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            ms *= 10;
        }
    }
    let offset_min: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = i64::from(oh * 60 + om);
            if sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset_min * 60;
    let total = secs.checked_mul(1000)?.checked_add(ms as i64)?;
    u64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;
    use p3_lanes::core::auth::{rfc3339_ms, siwe_message, SiweFields};

    fn fields(address: &str) -> SiweFields {
        SiweFields {
            domain: "localhost:8080".into(),
            address: address.into(),
            statement: Some("Sign in to P3".into()),
            uri: "http://localhost:8080/".into(),
            chain_id: 1,
            nonce: "0123456789abcdef".into(),
            issued_at: "2026-12-07T00:00:00.000Z".into(),
            ..SiweFields::default()
        }
    }

    fn key(n: u8) -> SigningKey {
        let mut b = [0u8; 32];
        b[31] = n;
        SigningKey::from_bytes(&b.into()).unwrap()
    }

    fn sign(k: &SigningKey, msg: &str) -> String {
        let (sig, recid) = k
            .sign_prehash_recoverable(&personal_sign_hash(msg.as_bytes()))
            .unwrap();
        let mut out = String::from("0x");
        for b in sig.to_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out.push_str(&format!("{:02x}", 27 + recid.to_byte()));
        out
    }

    #[test]
    fn known_key_addresses_and_eip55() {
        // Private key 1 and 2: well-known addresses.
        assert_eq!(
            eip55(&address_of(key(1).verifying_key())),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
        assert_eq!(
            eip55(&address_of(key(2).verifying_key())),
            "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"
        );
        // EIP-55's own test vector.
        let a = parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap();
        assert_eq!(eip55(&a), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
        assert!(parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_none());
    }

    #[test]
    fn parses_what_the_builder_writes() {
        let mut f = fields("0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf");
        f.expiration_time = Some("2026-12-07T00:10:00Z".into());
        f.not_before = Some("2026-12-06T23:59:00+00:00".into());
        f.request_id = Some("req-1".into());
        f.resources = vec!["https://example.com/a".into(), "ipfs://x".into()];
        let m = parse(&siwe_message(&f)).unwrap();
        assert_eq!(m.domain, "localhost:8080");
        assert_eq!(m.statement.as_deref(), Some("Sign in to P3"));
        assert_eq!(m.chain_id, 1);
        assert_eq!(m.nonce, "0123456789abcdef");
        assert_eq!(rfc3339_ms(m.issued_at_ms), "2026-12-07T00:00:00.000Z");
        assert_eq!(
            rfc3339_ms(m.expiration_ms.unwrap()),
            "2026-12-07T00:10:00.000Z"
        );
        assert_eq!(
            rfc3339_ms(m.not_before_ms.unwrap()),
            "2026-12-06T23:59:00.000Z"
        );
        assert_eq!(m.request_id.as_deref(), Some("req-1"));
        assert_eq!(m.resources.len(), 2);
        f.statement = None;
        f.resources.clear();
        assert_eq!(parse(&siwe_message(&f)).unwrap().statement, None);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let good = siwe_message(&fields("0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"));
        assert!(parse(&good).is_ok());
        for bad in [
            String::new(),
            good.replace("wants you", "wants"),
            good.replace("0x7E5F", "0x7e5f"),
            good.replace("Version: 1", "Version: 2"),
            good.replace("Chain ID: 1", "Chain ID: +1"),
            good.replace("Chain ID: 1", "Chain ID: 99999999999999999999999"),
            good.replace("Nonce: 0123456789abcdef", "Nonce: short"),
            good.replace("Nonce: 0123456789abcdef", "Nonce: 0123456789-abcdef"),
            good.replace("2026-12-07T00:00:00.000Z", "yesterday"),
            good.replace("2026-12-07T00:00:00.000Z", "2026-02-30T00:00:00Z"),
            good.replace('\n', "\r\n"),
            format!("{good}\nextra"),
            format!("{good}\nResources:\nnot-a-dash"),
            good.replace("URI: ", "URL: "),
            "x".repeat(MAX_MESSAGE_BYTES + 1),
        ] {
            assert_eq!(
                parse(&bad).map_err(|e| e.0),
                Err(AuthReason::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5z"), Some(1500));
        assert_eq!(
            parse_rfc3339_ms("2021-09-30T16:25:24.123456Z"),
            Some(1_633_019_124_123)
        );
        for bad in [
            "1969-12-31T23:59:59Z",
            "2021-09-30 16:25:24Z",
            "2021-09-30T16:25:24",
            "2021-09-30T24:00:00Z",
            "2021-09-30T16:25:24.Z",
            "2021-09-30T16:25:24+0100",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn signatures_recover_the_signer() {
        let text = siwe_message(&fields("0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"));
        let sig = sign(&key(1), &text);
        assert_eq!(
            eip55(&recover(&text, &sig).unwrap()),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
        // v as 0/1 works too.
        let v01 = format!(
            "{}{:02x}",
            &sig[..130],
            u8::from_str_radix(&sig[130..], 16).unwrap() - 27
        );
        assert_eq!(recover(&text, &v01).unwrap(), recover(&text, &sig).unwrap());
        // A changed message recovers another address.
        assert_ne!(
            recover(&format!("{text} "), &sig).ok(),
            recover(&text, &sig).ok()
        );
        for bad in ["", "0x", &sig[2..], &format!("{}1d", &sig[..130])] {
            assert_eq!(
                recover(&text, bad).map_err(|e| e.0),
                Err(AuthReason::Malformed),
                "{bad}"
            );
        }
        let expected = Expected {
            domain: "localhost:8080",
            chain_ids: &[1],
            now_ms: parse_rfc3339_ms("2026-12-07T00:01:00Z").unwrap(),
            max_age_ms: 300_000,
        };
        assert!(verify(&text, &sig, &expected).is_ok());
        let other = sign(&key(2), &text);
        assert_eq!(
            verify(&text, &other, &expected).map_err(|e| e.0),
            Err(AuthReason::BadSignature)
        );
        assert!(uri_on_domain("https://localhost:8080", "localhost:8080"));
        assert!(!uri_on_domain(
            "https://localhost:8080.evil.com/",
            "localhost:8080"
        ));
        assert!(!uri_on_domain("ftp://localhost:8080/", "localhost:8080"));
    }
}
