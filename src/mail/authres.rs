//! `Authentication-Results` (RFC 8601): what the receiving mail server found when it checked a mail's DKIM
//! signatures, SPF and DMARC, and whether that vouches for the domain in the mail's `From:`.
//!
//! Anyone can write an `Authentication-Results` header into a mail they send, so only the header(s) the
//! receiving server added count: the topmost ones carrying its authserv-id (`[agents] trust_authserv_id`),
//! consecutive from the first of them. Headers lower down carry the same id only because a sender forged them
//! (the receiving server must remove incoming ones with its own id, RFC 8601 §5); a header of another server
//! ends the run. The value is read by a real parser — comments (nested, with quoted pairs) are white space,
//! quoted strings are values, one result per method with its properties — so text in a comment is never a
//! result. The parser is one pass over the value, and bounded: a header longer than [`MAX_HEADER_BYTES`] is
//! not read, results past [`MAX_RESULTS`] and properties past [`MAX_PROPERTIES`] are not kept.
//!
//! A mail counts as authenticated for its From domain when a trusted header says, aligned with that domain
//! (exact match, case-insensitive; organizational-domain "relaxed" alignment is not done, so a signature of
//! `mail.example.com` does not vouch for `example.com`): `dkim=pass` with `header.d` = the domain, or
//! `dmarc=pass` with `header.from` = the domain, or `spf=pass` with the domain of `smtp.mailfrom` = the
//! domain. `header.i` alone never does: it is the signer's claim of an identity, not the signing domain.

/// Longest header value read; a longer one is ignored (it counts as no result).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Results kept from one header.
pub const MAX_RESULTS: usize = 64;
/// Properties kept from one result; a result with more is dropped (it counts as no result).
pub const MAX_PROPERTIES: usize = 32;

/// One `Authentication-Results` header, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthResults {
    /// The server that wrote it, as written (compare case-insensitively).
    pub authserv_id: String,
    /// The optional version after the authserv-id.
    pub version: Option<String>,
    /// Empty for `; none` (nothing was checked).
    pub results: Vec<MethodResult>,
}

/// One `method=result` with its reason and properties, e.g. `dkim=pass header.d=example.com header.s=sel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodResult {
    /// Lower case, without its version: `dkim`, `spf`, `dmarc`, …
    pub method: String,
    /// Lower case: `pass`, `fail`, `none`, …
    pub result: String,
    pub reason: Option<String>,
    pub properties: Vec<Property>,
}

/// `ptype.property=value`, e.g. `header.d=example.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// Lower case: `smtp`, `header`, `body`, `policy`.
    pub ptype: String,
    /// Lower case: `d`, `i`, `from`, `mailfrom`, …
    pub name: String,
    pub value: String,
}

impl MethodResult {
    /// The value of `ptype.name`, if the result has it exactly once (a repeated property is ambiguous: it
    /// counts as absent).
    pub fn property(&self, ptype: &str, name: &str) -> Option<&str> {
        let mut found = self
            .properties
            .iter()
            .filter(|p| p.ptype == ptype && p.name == name);
        let first = found.next()?;
        found.next().is_none().then_some(first.value.as_str())
    }

    fn passes(&self, method: &str) -> bool {
        self.method == method && self.result == "pass"
    }
}

/// A lexical token of the header value. `spaced`: white space or a comment came before it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// A run of characters other than white space, `(`, `)`, `"`, `;` and `=` (so `header.d`,
    /// `user@example.com` and `dkim/1` are words; `/`, `.` and `@` are split out by the grammar).
    Word(String, bool),
    Quoted(String, bool),
    Semi,
    Equals,
}

/// The tokens of `value`, comments dropped; `None` when a comment or quoted string is not closed.
fn tokens(value: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    let mut spaced = false;
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => spaced = true,
            '(' => {
                // Nested comments are counted, not recursed into: depth costs nothing.
                let mut depth = 1usize;
                while depth > 0 {
                    match chars.next()? {
                        '\\' => {
                            chars.next()?;
                        }
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
                spaced = true;
            }
            // A stray `)` is not a comment; it makes what follows unreadable to the grammar.
            ')' => return None,
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '\\' => s.push(chars.next()?),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                out.push(Token::Quoted(s, spaced));
                spaced = false;
            }
            ';' => {
                out.push(Token::Semi);
                spaced = false;
            }
            '=' => {
                out.push(Token::Equals);
                spaced = false;
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '(' | ')' | '"' | ';' | '=') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Token::Word(s, spaced));
                spaced = false;
            }
        }
    }
    Some(out)
}

/// A keyword of the grammar (method, result, ptype, property): letters, digits, `-` and `_`.
fn keyword(s: &str) -> Option<String> {
    (!s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| s.to_ascii_lowercase())
}

/// Parse one header value (without the field name). `None` when it is too long, has no authserv-id, or a
/// comment or quoted string is not closed. A result that does not follow the grammar is dropped, not
/// guessed at; the results after it are still read.
pub fn parse(value: &str) -> Option<AuthResults> {
    if value.len() > MAX_HEADER_BYTES {
        return None;
    }
    let tokens = tokens(value)?;
    let mut at = tokens.iter().peekable();
    let authserv_id = match at.next()? {
        Token::Word(w, _) | Token::Quoted(w, _) if !w.is_empty() => w.clone(),
        _ => return None,
    };
    let version = match at.peek() {
        Some(Token::Word(v, true)) if v.bytes().all(|b| b.is_ascii_digit()) => {
            at.next();
            Some(v.clone())
        }
        _ => None,
    };
    let mut results = Vec::new();
    // Everything up to the first `;` belongs to the authserv-id part: anything else there is not ours to
    // read, so the header is skipped to it.
    while at.next_if(|t| **t != Token::Semi).is_some() {}
    // One resinfo per `;`.
    while at.next().is_some() {
        let mut resinfo = Vec::new();
        while let Some(t) = at.next_if(|t| **t != Token::Semi) {
            resinfo.push(t);
        }
        if results.len() == MAX_RESULTS {
            break;
        }
        if let [Token::Word(w, _)] = resinfo.as_slice() {
            if w.eq_ignore_ascii_case("none") {
                continue;
            }
        }
        if let Some(r) = method_result(&resinfo) {
            results.push(r);
        }
    }
    Some(AuthResults {
        authserv_id,
        version,
        results,
    })
}

/// `method[/version] = result [reason=value] [ptype.property=value …]`, or `None`.
fn method_result(tokens: &[&Token]) -> Option<MethodResult> {
    let [Token::Word(method, _), Token::Equals, Token::Word(result, _), rest @ ..] = tokens else {
        return None;
    };
    let method = match method.split_once('/') {
        Some((m, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => m,
        Some(_) => return None,
        None => method,
    };
    let mut r = MethodResult {
        method: keyword(method)?,
        result: keyword(result)?,
        reason: None,
        properties: Vec::new(),
    };
    let mut rest = rest;
    while let [Token::Word(name, _), Token::Equals, after @ ..] = rest {
        // The value: a word or quoted string, or a quoted local-part with its `@domain` right after it.
        let (value, after) = match after {
            [Token::Quoted(local, _), Token::Word(domain, false), after @ ..]
                if domain.starts_with('@') =>
            {
                (format!("{local}{domain}"), after)
            }
            [Token::Word(v, _) | Token::Quoted(v, _), after @ ..] => (v.clone(), after),
            _ => return None,
        };
        rest = after;
        if name.eq_ignore_ascii_case("reason") && r.reason.is_none() && r.properties.is_empty() {
            r.reason = Some(value);
            continue;
        }
        let (ptype, property) = name.split_once('.')?;
        if r.properties.len() == MAX_PROPERTIES {
            return None;
        }
        r.properties.push(Property {
            ptype: keyword(ptype)?,
            name: keyword(property)?,
            value,
        });
    }
    rest.is_empty().then_some(r)
}

/// The headers the receiving server `authserv_id` added, parsed: of `headers` (topmost first, as the mail
/// carries them), the run of consecutive ones with that authserv-id that starts at the first of them.
/// Headers of other servers above it are passed over (a filter after the receiving server may add its
/// own); everything after the run is ignored, whatever id it carries.
pub fn trusted(headers: &[String], authserv_id: &str) -> Vec<AuthResults> {
    // A header that cannot be read has no id we could trust: it ends the run (or is passed over before it).
    let ours = |h: &Option<AuthResults>| {
        h.as_ref()
            .is_some_and(|h| h.authserv_id.eq_ignore_ascii_case(authserv_id))
    };
    headers
        .iter()
        .map(|h| parse(h))
        .skip_while(|h| !ours(h))
        .take_while(ours)
        .flatten()
        .collect()
}

/// Whether the receiving server `authserv_id` vouches for `domain` (the From address's domain): see the
/// module overview for what counts.
pub fn authenticated(headers: &[String], authserv_id: &str, domain: &str) -> bool {
    let norm = |d: &str| d.trim().trim_end_matches('.').to_ascii_lowercase();
    let domain = norm(domain);
    if domain.is_empty() {
        return false;
    }
    let aligned = |v: Option<&str>| v.is_some_and(|d| norm(d) == domain);
    let trusted = trusted(headers, authserv_id);
    let results = || trusted.iter().flat_map(|h| &h.results);
    // Per method, the results that speak of the From domain. They must all pass: a forged header right
    // below the server's own carries the same id and cannot be told apart by its place, so a `pass` never
    // outweighs the server's own `fail` for the same domain.
    let vouches = |method: &str, domain_of: &dyn Fn(&MethodResult) -> Option<String>| {
        let mut about = results()
            .filter(|r| r.method == method)
            .filter(|r| aligned(domain_of(r).as_deref()))
            .peekable();
        about.peek().is_some() && about.all(|r| r.passes(method))
    };
    vouches("dkim", &|r| r.property("header", "d").map(str::to_string))
        || vouches("dmarc", &|r| {
            r.property("header", "from").map(str::to_string)
        })
        || vouches("spf", &|r| {
            r.property("smtp", "mailfrom")
                .map(|m| m.rsplit_once('@').map_or(m, |(_, d)| d).to_string())
        })
}

/// Whether the receiving server `authserv_id` says DMARC failed for `domain` (the From address's domain):
/// a trusted `dmarc=fail` whose `header.from` is that domain.
pub fn dmarc_fails(headers: &[String], authserv_id: &str, domain: &str) -> bool {
    let norm = |d: &str| d.trim().trim_end_matches('.').to_ascii_lowercase();
    let domain = norm(domain);
    !domain.is_empty()
        && trusted(headers, authserv_id)
            .iter()
            .flat_map(|h| &h.results)
            .any(|r| {
                r.method == "dmarc"
                    && r.result == "fail"
                    && r.property("header", "from")
                        .is_some_and(|d| norm(d) == domain)
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_grammar() {
        let a = parse("mx.example.com 1; dkim/1=pass reason=\"good signature\" (comment) header.d=example.com header.s=\"sel\"; spf=fail smtp.mailfrom=\"john doe\"@example.org; dmarc=pass (p=none) header.from=example.com").unwrap();
        assert_eq!(a.authserv_id, "mx.example.com");
        assert_eq!(a.version.as_deref(), Some("1"));
        assert_eq!(a.results.len(), 3);
        assert_eq!(a.results[0].method, "dkim");
        assert_eq!(a.results[0].result, "pass");
        assert_eq!(a.results[0].reason.as_deref(), Some("good signature"));
        assert_eq!(a.results[0].property("header", "d"), Some("example.com"));
        assert_eq!(a.results[0].property("header", "s"), Some("sel"));
        assert_eq!(
            a.results[1].property("smtp", "mailfrom"),
            Some("john doe@example.org")
        );
        assert_eq!(a.results[2].property("header", "from"), Some("example.com"));
        let none = parse("\"mx.example.com\"; none").unwrap();
        assert_eq!(none.authserv_id, "mx.example.com");
        assert!(none.results.is_empty());
        assert!(parse("").is_none());
        assert!(parse("mx; dkim=pass (unclosed").is_none());
        assert!(parse("mx; dkim=pass header.d=\"unclosed").is_none());
    }

    #[test]
    fn comments_nest_and_are_never_results() {
        let a = parse(
            "mx.example.com; dkim=fail ( dkim=pass header.d=example.com ) header.d=evil.example",
        )
        .unwrap();
        assert_eq!(a.results.len(), 1);
        assert_eq!(a.results[0].result, "fail");
        assert_eq!(a.results[0].property("header", "d"), Some("evil.example"));
        let nested = parse(
            "mx.example.com (a (b; dkim=pass) \\) c); dkim=fail (x (y) z) header.d=e.example",
        )
        .unwrap();
        assert_eq!(nested.results.len(), 1);
        assert_eq!(nested.results[0].result, "fail");
        // A `;` in a comment or a quoted string does not start a result.
        let q = parse("mx.example.com; spf=fail smtp.mailfrom=\"x;dkim=pass header.d=example.com\"@evil.example").unwrap();
        assert_eq!(q.results.len(), 1);
        assert!(!authenticated(
            &h(&["mx.example.com; dkim=fail (; dkim=pass header.d=example.com) header.d=evil.example"]),
            "mx.example.com",
            "example.com"
        ));
    }

    #[test]
    fn malformed_results_are_dropped_not_guessed() {
        let a = parse("mx.example.com; dkim=pass header.d; dkim pass header.d=example.com; dkim=pass header.d=example.com header.d=evil.example; spf=pass smtp.mailfrom=ok.example").unwrap();
        assert_eq!(a.results.len(), 2, "{a:?}");
        assert_eq!(
            a.results[0].property("header", "d"),
            None,
            "repeated: ambiguous"
        );
        assert_eq!(a.results[1].method, "spf");
    }

    #[test]
    fn only_the_topmost_run_of_the_trusted_server_counts() {
        let real_fail = "mx.example.com; dkim=fail header.d=example.com";
        let forged_pass = "mx.example.com; dkim=pass header.d=example.com";
        let filter = "filter.example.com; spamassassin=pass";
        assert!(!authenticated(
            &h(&[real_fail, forged_pass]),
            "mx.example.com",
            "example.com"
        ));
        assert!(!authenticated(
            &h(&[real_fail, filter, forged_pass]),
            "mx.example.com",
            "example.com"
        ));
        assert!(
            authenticated(&h(&[filter, forged_pass]), "mx.example.com", "example.com"),
            "another server's header above is passed over"
        );
        assert!(
            !authenticated(
                &h(&[forged_pass, real_fail]),
                "mx.example.com",
                "example.com"
            ),
            "a pass never outweighs a fail of the run for the same domain"
        );
        assert!(
            authenticated(
                &h(&["mx.example.com; spf=none", forged_pass]),
                "MX.Example.com",
                "example.com"
            ),
            "two headers of the receiving server, consecutive"
        );
        assert!(!authenticated(
            &h(&[forged_pass]),
            "other.example",
            "example.com"
        ));
    }

    #[test]
    fn alignment_with_the_from_domain() {
        let ok = |v: &str, d: &str| authenticated(&h(&[v]), "mx", d);
        assert!(ok("mx; dkim=pass header.d=Example.COM", "example.com"));
        assert!(!ok(
            "mx; dkim=pass header.d=mail.example.com",
            "example.com"
        ));
        assert!(!ok(
            "mx; dkim=pass header.d=example.com.evil.example",
            "example.com"
        ));
        assert!(!ok("mx; dkim=pass header.i=@example.com", "example.com"));
        assert!(!ok(
            "mx; dkim=pass header.i=agent@example.com",
            "example.com"
        ));
        assert!(ok("mx; dmarc=pass header.from=example.com", "example.com"));
        assert!(!ok("mx; dmarc=pass", "example.com"));
        assert!(!ok("mx; dmarc=fail header.from=example.com", "example.com"));
        assert!(ok(
            "mx; spf=pass smtp.mailfrom=a@example.com",
            "example.com"
        ));
        assert!(!ok(
            "mx; spf=softfail smtp.mailfrom=a@example.com",
            "example.com"
        ));
        assert!(!ok("mx; dkim=pass header.d=example.com", ""));
    }

    #[test]
    fn the_mail_gives_its_headers_topmost_first() {
        let m = crate::mail::parse(
            b"Authentication-Results: mx.example.com; dkim=fail header.d=example.com\r\nAuthentication-Results:\r\nAuthentication-Results: mx.example.com;\r\n dkim=pass header.d=example.com\r\nFrom: a@example.com\r\nSubject: x\r\n\r\nbody\r\n",
            crate::types::Locale::En,
        )
        .unwrap();
        let a = &m.auto.authentication_results;
        assert_eq!(a.len(), 3, "{a:?}");
        assert!(a[0].contains("dkim=fail"), "{a:?}");
        assert_eq!(a[1], "", "an empty one is kept: it ends the run");
        assert!(a[2].contains("dkim=pass"), "{a:?}");
        assert!(!authenticated(a, "mx.example.com", "example.com"));
    }

    #[test]
    fn cost_is_linear_and_bounded() {
        // 10,000 results in one header: past the size cap, not read at all.
        let big = format!("mx{}", "; dkim=pass header.d=example.com".repeat(10_000));
        assert!(parse(&big).is_none());
        // Just under the cap: at most MAX_RESULTS kept.
        let many = format!("mx{}", "; a=b".repeat(MAX_HEADER_BYTES / 6 - 1));
        assert_eq!(parse(&many).unwrap().results.len(), MAX_RESULTS);
        // Deep comment nesting is counted, not recursed into.
        let deep = format!("mx; dkim=fail {}{}", "(".repeat(8000), ")".repeat(8000));
        assert_eq!(parse(&deep).unwrap().results.len(), 1);
        let props = format!(
            "mx; dkim=pass{} header.d=example.com",
            " x.y=z".repeat(MAX_PROPERTIES)
        );
        assert!(parse(&props).unwrap().results.is_empty());
    }
}
