//! HTML mail → readable text: [`html_to_text`] keeps the structure a reader needs (paragraphs, line breaks,
//! list items one per line with `- ` or `1. `, table rows one per line with cells separated by ` | `, a
//! link's address after its text when the two differ) and drops what a mail client adds around the words
//! (`<head>`, `<style>`, `<script>`, comments, Word's conditional markup) and the signature elements of
//! the common clients (see [`is_signature_element`]), of which only the sign-off lines above the contact
//! details stay (the rule of [`super::quote::signature_head`], the same one plain-text signatures follow).
//!
//! Why an own converter and not a crate such as `html2text`: that one builds a DOM with html5ever (a large
//! dependency tree to build on every machine) and renders it with a tree walk, where a sender controls the
//! depth (its recursion has overflowed the stack before), and it has no hook to drop a signature `<div>`
//! before rendering. Mail HTML needs far less than a browser's tree builder: one pass over the bytes with a
//! tokenizer, a stack of open elements capped at [`MAX_DEPTH`] (deeper elements are counted, not kept), and
//! a bounded search when a closing tag does not match the top. Time and memory are linear in the input,
//! whatever its nesting; the output is never longer than a small multiple of the input.

use mail_parser::decoders::html::add_html_token;

use super::quote::signature_head;

/// The most open elements tracked. Deeper ones still break lines, but carry no list, table, link or
/// signature state: real mail nests a few dozen levels, a hostile one 200,000.
pub const MAX_DEPTH: usize = 256;

/// How far down the stack a closing tag looks for its element (misnested HTML closes a few at a time).
const CLOSE_SEARCH: usize = 64;

/// The longest entity name looked up (`&CounterClockwiseContourIntegral;` is 33 bytes).
const MAX_ENTITY: usize = 40;

/// Text for an HTML body. Pure and linear in `html`.
pub fn html_to_text(html: &str) -> String {
    let mut c = Converter::default();
    c.run(html);
    c.finish()
}

/// What an open element means for the text.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Other,
    /// Breaks the line before and after (`div`, `li`, `tr`, …); the number is the breaks wanted.
    Block(u8),
    List {
        ordered: bool,
    },
    Item,
    Row,
    Cell,
    Pre,
    Link,
    /// A signature element: its text is collected apart and replaced by its sign-off lines.
    Signature,
    /// Dropped with its content (Gmail's `-- ` prefix before the signature).
    Dropped,
}

struct Open {
    name: String,
    kind: Kind,
}

/// The text written so far and the breaks and space still owed before the next word.
#[derive(Default)]
struct Writer {
    out: String,
    /// Line breaks owed before the next text (at most 2: a blank line).
    breaks: u8,
    space: bool,
}

impl Writer {
    fn block(&mut self, n: u8) {
        self.breaks = self.breaks.max(n);
        self.space = false;
    }

    fn br(&mut self) {
        self.breaks = (self.breaks + 1).min(2);
        self.space = false;
    }

    /// Writes `s` (already decoded), paying the breaks and space owed first.
    fn text(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        self.flush();
        self.out.push_str(s);
    }

    fn flush(&mut self) {
        if self.breaks > 0 {
            if !self.out.is_empty() {
                for _ in 0..self.breaks {
                    self.out.push('\n');
                }
            }
            self.breaks = 0;
            self.space = false;
        } else if self.space {
            if !self.out.is_empty() && !self.out.ends_with([' ', '\n']) {
                self.out.push(' ');
            }
            self.space = false;
        }
    }
}

#[derive(Default)]
struct Converter {
    w: Writer,
    stack: Vec<Open>,
    /// Elements opened past [`MAX_DEPTH`] and not yet closed.
    overflow: usize,
    /// For each open list: ordered, and the number of the next item.
    lists: Vec<(bool, usize)>,
    /// Cells opened in the current row.
    cells: Vec<usize>,
    /// Where the text of the last list item starts in the output (just after its marker).
    item_start: Option<usize>,
    /// Where the text of each open table cell starts in the output.
    cell_starts: Vec<usize>,
    in_pre: usize,
    /// The open link: its address and where its text starts in the output.
    link: Option<(String, usize)>,
    /// While a signature element is open: the writer of the text around it, and the stack depth it
    /// closes at.
    signature: Option<(Writer, usize)>,
    dropped: Option<usize>,
    in_head: bool,
}

impl Converter {
    fn run(&mut self, html: &str) {
        let b = html.as_bytes();
        let mut i = 0;
        let mut text_start = 0;
        while i < b.len() {
            match b[i] {
                b'<' => {
                    let next = b.get(i + 1).copied().unwrap_or(0);
                    if !(next.is_ascii_alphabetic() || matches!(next, b'/' | b'!' | b'?')) {
                        i += 1;
                        continue;
                    }
                    self.text(&html[text_start..i]);
                    i = self.markup(html, i);
                    text_start = i;
                }
                b'&' => {
                    self.text(&html[text_start..i]);
                    i = self.entity(html, i);
                    text_start = i;
                }
                _ => i += 1,
            }
        }
        self.text(&html[text_start..]);
    }

    fn finish(mut self) -> String {
        if self.signature.is_some() {
            self.end_signature();
        }
        // Trailing white space of every line goes (an `&nbsp;` paragraph is an empty line), and runs of
        // empty lines (Outlook's spacer paragraphs next to a block) become one.
        let mut out = String::with_capacity(self.w.out.len());
        let mut blank_run = 0;
        for (n, line) in self.w.out.trim_end().split('\n').enumerate() {
            let line = line.trim_end();
            blank_run = if line.is_empty() { blank_run + 1 } else { 0 };
            if blank_run > 1 {
                continue;
            }
            if n > 0 {
                out.push('\n');
            }
            out.push_str(line);
        }
        out
    }

    fn suppressed(&self) -> bool {
        self.in_head || self.dropped.is_some()
    }

    /// Text between tags: white space collapsed (kept inside `<pre>`).
    fn text(&mut self, s: &str) {
        if s.is_empty() || self.suppressed() {
            return;
        }
        if self.in_pre > 0 {
            for (n, line) in s.split('\n').enumerate() {
                if n > 0 && !self.w.out.is_empty() {
                    self.w.flush();
                    self.w.out.push('\n');
                }
                self.w.text(line.trim_end_matches('\r'));
            }
            return;
        }
        let mut words = s.split(is_html_space).peekable();
        if s.starts_with(is_html_space) {
            self.w.space = true;
        }
        while let Some(word) = words.next() {
            if word.is_empty() {
                continue;
            }
            self.w.text(word);
            if words.peek().is_some() {
                self.w.space = true;
            }
        }
        if s.ends_with(is_html_space) {
            self.w.space = true;
        }
    }

    /// `&name;`, `&#123;`, `&#x1F;`; a lone `&` is text. Returns the index after what was read.
    fn entity(&mut self, html: &str, at: usize) -> usize {
        let b = html.as_bytes();
        let mut end = at + 1;
        while end < b.len()
            && end - at <= MAX_ENTITY
            && (b[end].is_ascii_alphanumeric() || b[end] == b'#')
        {
            end += 1;
        }
        if end < b.len() && b[end] == b';' && end > at + 1 {
            if !self.suppressed() {
                let mut decoded = String::new();
                add_html_token(&mut decoded, &b[at..=end], false);
                // &nbsp; is a space for the reader, but one that the text keeps.
                let decoded = decoded.replace('\u{a0}', " ");
                if decoded == " " {
                    self.w.flush();
                    self.w.out.push(' ');
                } else {
                    self.w.text(&decoded);
                }
            }
            return end + 1;
        }
        if !self.suppressed() {
            self.w.text("&");
        }
        at + 1
    }

    /// A tag, comment or declaration at `at` (which is `<`). Returns the index after it.
    fn markup(&mut self, html: &str, at: usize) -> usize {
        let b = html.as_bytes();
        if b[at + 1] == b'!' {
            if b[at..].starts_with(b"<!--") {
                return find(b, at + 4, b"-->").map_or(b.len(), |e| e + 3);
            }
            return find(b, at, b">").map_or(b.len(), |e| e + 1);
        }
        if b[at + 1] == b'?' {
            return find(b, at, b">").map_or(b.len(), |e| e + 1);
        }
        let closing = b[at + 1] == b'/';
        let name_start = at + 1 + usize::from(closing);
        let mut i = name_start;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'>' | b'/') {
            i += 1;
        }
        let name = html[name_start..i].to_ascii_lowercase();
        // Attributes, quotes respected.
        let mut attrs = Attrs::default();
        let mut self_closing = false;
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                self_closing = b[i] == b'/';
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            if b[i] == b'>' {
                i += 1;
                break;
            }
            self_closing = false;
            let key_start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'>' | b'=' | b'/')
            {
                i += 1;
            }
            let key = &html[key_start..i];
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut value = "";
            if i < b.len() && b[i] == b'=' {
                i += 1;
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i < b.len() && matches!(b[i], b'"' | b'\'') {
                    let q = b[i];
                    let end = find(b, i + 1, &[q]).unwrap_or(b.len());
                    value = &html[i + 1..end];
                    i = (end + 1).min(b.len());
                } else {
                    let v = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = &html[v..i];
                }
            }
            attrs.set(key, value);
        }
        if closing {
            self.close(&name);
            return i;
        }
        // Content that is never text: skipped to its closing tag.
        if matches!(
            name.as_str(),
            "style" | "script" | "template" | "title" | "xml"
        ) && !self_closing
        {
            let close = format!("</{name}");
            return find_ignore_case(b, i, close.as_bytes())
                .and_then(|e| find(b, e, b">").map(|g| g + 1))
                .unwrap_or(b.len());
        }
        self.open(&name, &attrs, self_closing);
        i
    }

    fn open(&mut self, name: &str, attrs: &Attrs, self_closing: bool) {
        match name {
            "head" => {
                self.in_head = true;
                return;
            }
            "body" => {
                self.in_head = false;
                return;
            }
            "br" => {
                if !self.suppressed() {
                    self.w.br();
                }
                return;
            }
            "hr" => {
                self.block(2);
                return;
            }
            _ if is_void(name) || self_closing => return,
            _ => {}
        }
        let mut kind = kind_of(name, attrs);
        // Implied ends: a new item, paragraph, cell or row closes the open one.
        if matches!(
            name,
            "li" | "p" | "td" | "th" | "tr" | "dt" | "dd" | "option"
        ) {
            while let Some(top) = self.stack.last() {
                let implied = top.name == name
                    || (matches!(name, "td" | "th") && matches!(top.name.as_str(), "td" | "th"))
                    || (name == "tr" && matches!(top.name.as_str(), "td" | "th" | "tr"));
                if !implied || self.overflow > 0 {
                    break;
                }
                self.pop();
            }
        }
        if self.stack.len() >= MAX_DEPTH {
            self.overflow += 1;
            if let Kind::Block(n) = kind {
                self.block(n);
            }
            return;
        }
        if self.suppressed() && kind == Kind::Signature {
            kind = Kind::Other;
        }
        match kind {
            Kind::Block(n) => self.block(n),
            Kind::List { ordered } => {
                // A list stands apart from the text around it; a list inside an item does not.
                self.block(if self.lists.is_empty() { 2 } else { 1 });
                self.lists.push((ordered, 1));
            }
            Kind::Item => {
                self.block(1);
                if !self.suppressed() {
                    let depth = self.lists.len().clamp(1, 4);
                    let (ordered, number) = match self.lists.last_mut() {
                        Some((ordered, n)) => {
                            *n += 1;
                            (*ordered, *n - 1)
                        }
                        None => (false, 1),
                    };
                    // Items of one list are lines, even when each holds a paragraph.
                    if number > 1 {
                        self.w.breaks = self.w.breaks.min(1);
                    }
                    let marker = if ordered {
                        format!("{number}. ")
                    } else {
                        "- ".to_string()
                    };
                    self.w.text(&format!("{}{marker}", "  ".repeat(depth - 1)));
                    self.item_start = Some(self.w.out.len());
                }
            }
            Kind::Row => {
                self.block(1);
                self.cells.push(0);
            }
            Kind::Cell => {
                let suppressed = self.suppressed();
                if let Some(n) = self.cells.last_mut() {
                    if *n > 0 && !suppressed {
                        self.w.breaks = 0;
                        self.w.space = false;
                        self.w.text(" | ");
                    }
                    *n += 1;
                }
                self.cell_starts.push(self.w.out.len());
            }
            Kind::Pre => {
                self.block(2);
                self.in_pre += 1;
            }
            Kind::Link => {
                let href = attrs.href.trim();
                if href.is_empty() || self.link.is_some() {
                    kind = Kind::Other;
                } else {
                    self.link = Some((href.to_string(), self.w.out.len()));
                }
            }
            Kind::Signature => {
                if self.signature.is_none() {
                    self.block(2);
                    let outer = std::mem::take(&mut self.w);
                    self.signature = Some((outer, self.stack.len()));
                } else {
                    kind = Kind::Other;
                }
            }
            Kind::Dropped => {
                if self.dropped.is_none() {
                    self.dropped = Some(self.stack.len());
                } else {
                    kind = Kind::Other;
                }
            }
            Kind::Other => {}
        }
        self.stack.push(Open {
            name: name.to_string(),
            kind,
        });
    }

    fn close(&mut self, name: &str) {
        match name {
            "head" => {
                self.in_head = false;
                return;
            }
            "p" | "br"
                if !self
                    .stack
                    .iter()
                    .rev()
                    .take(CLOSE_SEARCH)
                    .any(|o| o.name == name) =>
            {
                // `</p>` and `</br>` without an open element still break the line, as browsers do.
                self.block(1);
                return;
            }
            _ => {}
        }
        if self.overflow > 0 {
            self.overflow -= 1;
            if let Kind::Block(n) = kind_of(name, &Attrs::default()) {
                self.block(n);
            }
            return;
        }
        let Some(found) = self
            .stack
            .iter()
            .rev()
            .take(CLOSE_SEARCH)
            .position(|o| o.name == name)
        else {
            return;
        };
        for _ in 0..=found {
            self.pop();
        }
    }

    fn pop(&mut self) {
        let Some(open) = self.stack.pop() else {
            return;
        };
        match open.kind {
            Kind::Block(n) => self.block(n),
            Kind::List { .. } => {
                self.lists.pop();
                self.block(if self.lists.is_empty() { 2 } else { 1 });
            }
            Kind::Item => self.block(1),
            Kind::Row => {
                self.cells.pop();
                self.block(1);
            }
            Kind::Cell => {
                // What a cell's last block owes goes: the next cell or the row decides.
                if let Some(start) = self.cell_starts.pop() {
                    if self.w.out.len() > start {
                        self.w.breaks = 0;
                        self.w.space = true;
                    }
                }
            }
            Kind::Pre => {
                self.in_pre = self.in_pre.saturating_sub(1);
                self.block(2);
            }
            Kind::Link => self.end_link(),
            Kind::Signature => {
                if self
                    .signature
                    .as_ref()
                    .is_some_and(|(_, at)| *at == self.stack.len())
                {
                    self.end_signature();
                }
            }
            Kind::Dropped => {
                if self.dropped == Some(self.stack.len()) {
                    self.dropped = None;
                }
            }
            Kind::Other => {}
        }
    }

    fn block(&mut self, n: u8) {
        if self.suppressed() {
            return;
        }
        // A block opening a table cell (Outlook's <td><p class=MsoNormal>) does not split the row, nor one
        // opening a list item (<li><div>…) separate the item from its marker.
        let at = Some(self.w.out.len());
        if self.cell_starts.last().copied() == at || self.item_start == at {
            return;
        }
        self.w.block(n);
    }

    /// After a link's text: its address, when the text does not already say it.
    fn end_link(&mut self) {
        let Some((href, at)) = self.link.take() else {
            return;
        };
        if self.suppressed() {
            return;
        }
        let shown = self.w.out.get(at..).unwrap_or("").trim();
        let target = match href.strip_prefix("mailto:") {
            Some(address) => address.split('?').next().unwrap_or(""),
            None => &href,
        };
        let useful = href.starts_with("http://")
            || href.starts_with("https://")
            || href.starts_with("mailto:");
        let same = |a: &str, b: &str| {
            let t = |s: &str| {
                s.trim_end_matches('/')
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .to_ascii_lowercase()
            };
            t(a) == t(b)
        };
        if useful && !shown.is_empty() && !same(shown, target) && !same(shown, &href) {
            self.w.text(&format!(" <{target}>"));
        }
    }

    /// The signature element closed: its text is replaced by its sign-off lines (often only the name).
    fn end_signature(&mut self) {
        let Some((outer, _)) = self.signature.take() else {
            return;
        };
        let inner = std::mem::replace(&mut self.w, outer);
        let head = signature_head(&inner.out);
        if !head.is_empty() {
            self.w.block(1);
            for (n, line) in head.lines().enumerate() {
                if n > 0 {
                    self.w.br();
                }
                self.w.text(line);
            }
        }
        self.w.block(2);
    }
}

/// The attributes the converter reads.
#[derive(Default)]
struct Attrs {
    class: String,
    id: String,
    href: String,
}

impl Attrs {
    fn set(&mut self, key: &str, value: &str) {
        let slot = if key.eq_ignore_ascii_case("class") {
            &mut self.class
        } else if key.eq_ignore_ascii_case("id") {
            &mut self.id
        } else if key.eq_ignore_ascii_case("href") {
            &mut self.href
        } else {
            return;
        };
        // Bounded: an attribute is read for a few words, never copied whole from a hostile mail.
        *slot = value.chars().take(2048).collect();
    }
}

/// A signature element of a common client: Gmail `class="gmail_signature"`, Thunderbird
/// `class="moz-signature"`, Outlook `id="Signature"` (also `x_Signature` when forwarded by Outlook on the
/// web), Apple Mail and iOS `id="AppleMailSignature"`, Yahoo `class="signature"`, and the
/// `data-smartmail="gmail_signature"` marker (only the class and id are read).
fn is_signature_element(attrs: &Attrs) -> bool {
    let class = attrs.class.to_ascii_lowercase();
    let id = attrs.id.to_ascii_lowercase();
    class
        .split_ascii_whitespace()
        .any(|c| matches!(c, "gmail_signature" | "moz-signature" | "signature"))
        || matches!(
            id.as_str(),
            "signature" | "x_signature" | "applemailsignature" | "x_applemailsignature"
        )
}

fn kind_of(name: &str, attrs: &Attrs) -> Kind {
    if is_signature_element(attrs) {
        return Kind::Signature;
    }
    if attrs
        .class
        .split_ascii_whitespace()
        .any(|c| c.eq_ignore_ascii_case("gmail_signature_prefix"))
    {
        return Kind::Dropped;
    }
    match name {
        "ul" | "ol" | "menu" | "dir" => Kind::List {
            ordered: name == "ol",
        },
        "li" => Kind::Item,
        "tr" => Kind::Row,
        "td" | "th" => Kind::Cell,
        "pre" | "listing" | "plaintext" => Kind::Pre,
        "a" => Kind::Link,
        // Outlook writes every line as <p class=MsoNormal>: one break, as its own plain text does.
        "p" if attrs.class.eq_ignore_ascii_case("msonormal") => Kind::Block(1),
        "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "blockquote" | "table" | "figure" => {
            Kind::Block(2)
        }
        "div" | "section" | "article" | "header" | "footer" | "address" | "center" | "dl"
        | "dt" | "dd" | "nav" | "aside" | "main" | "form" | "fieldset" | "caption" | "thead"
        | "tbody" | "tfoot" | "details" | "summary" | "option" => Kind::Block(1),
        _ => Kind::Other,
    }
}

fn is_void(name: &str) -> bool {
    matches!(
        name,
        "area"
            | "base"
            | "col"
            | "embed"
            | "img"
            | "input"
            | "link"
            | "meta"
            | "param"
            | "source"
            | "track"
            | "wbr"
            | "basefont"
            | "frame"
            | "keygen"
    )
}

fn is_html_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// The first `needle` at or after `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay_from = hay.get(from..)?;
    hay_from
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn find_ignore_case(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay_from = hay.get(from..)?;
    hay_from
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_lists_and_tables_keep_their_structure() {
        let html = "<p>ご注文の件です。</p><ul><li>注文日: 11/25</li><li>支払: クレジットカード</li></ul>\
            <ol><li>first</li><li><p>second</p></li></ol><ul><li><div>x</div></li><li><div>y</div></li></ul>\
            <table><tr><th>商品</th><th>数量</th></tr><tr><td><p class=MsoNormal>DL-200</p></td><td>2</td></tr></table>\
            <p>See <a href=\"https://example.com/track?id=1\">the tracking page</a> or \
            <a href=\"https://example.com/\">https://example.com/</a>.<br>Line two</p>";
        assert_eq!(
            html_to_text(html),
            "ご注文の件です。\n\n- 注文日: 11/25\n- 支払: クレジットカード\n\n1. first\n2. second\n\n- x\n- y\n\n\
             商品 | 数量\nDL-200 | 2\n\n\
             See the tracking page <https://example.com/track?id=1> or https://example.com/.\nLine two"
        );
    }

    #[test]
    fn spacer_paragraphs_leave_one_blank_line() {
        let html = "<p class=MsoNormal>a<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p><table><tr><td>x</td><td>y</td></tr></table><p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>b</p>";
        assert_eq!(html_to_text(html), "a\n\nx | y\n\nb");
    }

    #[test]
    fn markup_that_is_not_text_is_dropped() {
        let html = "<html><head><title>t</title><style>p{color:red}</style></head><body>\
            <!--[if gte mso 9]><xml><o:OfficeDocumentSettings/></xml><![endif]-->\
            <script>alert(1)</script><p>A &amp; B&nbsp;&#8217;s &lt;x&gt; 5 &lt 6</p><o:p></o:p></body></html>";
        assert_eq!(html_to_text(html), "A & B ’s <x> 5 &lt 6");
    }

    #[test]
    fn deep_and_misnested_html_costs_linear_time() {
        let started = std::time::Instant::now();
        let deep = format!(
            "{}x{}",
            "<div><b>".repeat(100_000),
            "</b></div>".repeat(100_000)
        );
        assert_eq!(html_to_text(&deep), "x");
        let stray = format!("a{}b", "</span>".repeat(200_000));
        assert_eq!(html_to_text(&stray), "ab");
        let unclosed = format!("{}z", "<li>".repeat(100_000));
        assert!(html_to_text(&unclosed).ends_with("- z"));
        let lt = "<".repeat(100_000);
        assert_eq!(html_to_text(&lt), lt);
        let signatures = format!(
            "a{}b",
            "<div class=\"gmail_signature\"><a href=\"https://x.example\">".repeat(100_000)
        );
        // The signature never closes: it ends with the mail, and its one short line is its sign-off.
        assert_eq!(html_to_text(&signatures), "a\n\nb");
        // Minutes if any of these were quadratic.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn signature_elements_keep_only_their_sign_off() {
        let gmail = "<div dir=\"ltr\">Thanks, that is fixed.<br><br>Best regards,</div><br>\
            <span class=\"gmail_signature_prefix\">-- </span><br>\
            <div dir=\"ltr\" class=\"gmail_signature\" data-smartmail=\"gmail_signature\">\
            <div>Jane Doe<br>Support Lead, Acme Inc.<br>Tel: +1 555 0100<br>\
            <a href=\"https://acme.example\">acme.example</a></div></div>";
        assert_eq!(
            html_to_text(gmail),
            "Thanks, that is fixed.\n\nBest regards,\n\nJane Doe"
        );
        let iphone = "<div>Yes</div><div><br><div id=\"AppleMailSignature\" dir=\"ltr\">iPhoneから送信</div></div>";
        assert_eq!(html_to_text(iphone), "Yes");
    }
}
