//! When a certificate stops being valid: `notAfter` read from its DER (RFC 5280 4.1.2.5), and
//! the 14-day warning `check`, the metric and the start/reload log line share.
//!
//! A small DER walk of the fixed prefix of a certificate; anything unexpected gives `None`
//! (unknown), never a panic: the file has already been accepted by rustls.

use std::path::Path;

use rustls::pki_types::CertificateDer;

/// A certificate expiring sooner than this is a warning (`check`, the log).
pub const WARN_BEFORE_SECS: i64 = 14 * 24 * 3600;

/// One DER element: (tag, content, rest).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// `notAfter` of a certificate, in Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, certificate, _) = element(cert.as_ref())?;
    let (_, tbs, _) = element(certificate)?;
    let mut rest = tbs;
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] version
    }
    // serialNumber, signature, issuer, then validity.
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (_, validity, _) = element(rest)?;
    let (_, _, after_not_before) = element(validity)?;
    let (tag, time, _) = element(after_not_before)?;
    parse_time(tag, std::str::from_utf8(time).ok()?)
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18).
fn parse_time(tag: u8, text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, min, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `notAfter` of the first (leaf) certificate in a PEM file.
pub fn file_not_after(path: &Path) -> Option<i64> {
    let certs = super::client::read_certs(path).ok()?;
    not_after(certs.first()?)
}

/// A sentence for `check` and the log: "expires in N days (DATE)" or "EXPIRED".
pub fn describe(not_after: i64, now: i64) -> String {
    let left = not_after - now;
    if left <= 0 {
        format!("EXPIRED {} days ago", (-left) / 86400)
    } else {
        format!("expires in {} days", left / 86400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_unix_seconds() {
        assert_eq!(parse_time(0x17, "700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, "240229120000Z"), Some(1_709_208_000));
        assert_eq!(parse_time(0x18, "20500101000000Z"), Some(2_524_608_000));
        assert_eq!(parse_time(0x18, "2050010100Z"), None);
        assert_eq!(parse_time(0x05, "700101000000Z"), None);
    }

    #[test]
    fn not_after_of_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 9);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            not_after(cert.der()),
            Some(days_from_civil(2031, 7, 9) * 86400)
        );
        assert_eq!(not_after(&CertificateDer::from(vec![0x30, 0x01])), None);
        assert!(describe(0, 86400 * 3).starts_with("EXPIRED 3"));
        assert_eq!(describe(86400 * 20, 0), "expires in 20 days");
    }
}
