//! A lexer for PostgreSQL SQL text, enough to find where statements begin
//! and end the way psql does: it understands quoted strings (standard and
//! `E'...'`), quoted identifiers, dollar quotes, nested block comments, line
//! comments, parentheses and `BEGIN ATOMIC ... END` function bodies.
//!
//! Hand-written rather than bindings to libpg_query: splitting needs only
//! the lexical layer, which is small and stable, while the parser library
//! would add a C build and a large dependency for it.
//! Assumes `standard_conforming_strings = on` (PostgreSQL's default since
//! 9.1), so a backslash in `'...'` is an ordinary character; on a database
//! set the old way, a file with backslashes in strings may be read wrong
//! (the engine's run-time transaction guard still holds there).

use std::fmt;

/// One statement of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement<'a> {
    /// From its first token up to (not including) its `;`.
    pub text: &'a str,
    /// Byte offset of `text` in the file.
    pub offset: usize,
    /// 1-based line of its first token.
    pub line: usize,
    /// Its first four words, lower-case (`["rollback", "to", "x"]`).
    words: Vec<String>,
    /// It has the word CONCURRENTLY (`CREATE INDEX CONCURRENTLY`,
    /// `REINDEX ... CONCURRENTLY`, `DETACH PARTITION ... CONCURRENTLY`).
    pub concurrently: bool,
    /// `COPY ... FROM STDIN`, which needs data the file cannot send.
    pub copy_from_stdin: bool,
}

impl Statement<'_> {
    /// The keyword that ends or starts a transaction, if this statement is
    /// one: `BEGIN`, `START TRANSACTION`, `COMMIT`, `END`, `ROLLBACK` (not
    /// `ROLLBACK TO SAVEPOINT`), `ABORT`, `PREPARE TRANSACTION`.
    pub fn transaction_control(&self) -> Option<String> {
        let word = |i: usize| self.words.get(i).map(String::as_str);
        let control = match word(0)? {
            "begin" | "commit" | "end" | "abort" => true,
            "start" | "prepare" => word(1) == Some("transaction"),
            "rollback" => {
                let to = match word(1) {
                    Some("work" | "transaction") => word(2),
                    other => other,
                };
                to != Some("to")
            }
            _ => false,
        };
        control.then(|| {
            let n = if matches!(word(0), Some("start" | "prepare")) {
                2
            } else {
                1
            };
            self.words[..n].join(" ").to_uppercase()
        })
    }
}

impl Statement<'_> {
    /// Whether this is a `SET` for the session (`SET x = y`, `SET ROLE`,
    /// `SET SESSION x`), which lasts beyond its statement; not `SET LOCAL`,
    /// `SET TRANSACTION`, `SET CONSTRAINTS` or `SET SESSION CHARACTERISTICS`.
    pub fn is_session_set(&self) -> bool {
        let word = |i: usize| self.words.get(i).map(String::as_str);
        word(0) == Some("set")
            && !matches!(
                word(1),
                Some("local" | "transaction" | "constraints") | None
            )
            && !(word(1) == Some("session") && word(2) == Some("characteristics"))
    }
}

/// A place in a file, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The whole line, without its line end.
    pub text: String,
}

impl Location {
    /// The line and a caret under the column, indented for an error:
    ///
    /// ```text
    ///     3 | CREATE TABEL t (id int);
    ///       |        ^
    /// ```
    pub fn excerpt(&self) -> String {
        let number = self.line.to_string();
        // Tabs before the column stay tabs, so the caret lines up.
        let pad: String = self
            .text
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        format!(
            "  {number} | {}\n  {} | {pad}^",
            self.text,
            " ".repeat(number.len())
        )
    }
}

/// Where byte `offset` of `text` is.
pub fn locate(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    Location {
        line: text[..offset].matches('\n').count() + 1,
        column: text[line_start..offset].chars().count() + 1,
        text: text[line_start..line_end].trim_end_matches('\r').to_owned(),
    }
}

/// The byte offset of the 1-based character `position` the server reports
/// in an error, within the text that was sent.
pub fn position_to_offset(sent: &str, position: u32) -> usize {
    sent.char_indices()
        .nth((position as usize).saturating_sub(1))
        .map_or(sent.len(), |(i, _)| i)
}

/// A construct that is never closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub what: &'static str,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} is never closed", self.line, self.what)
    }
}

/// Splits SQL text into statements. Empty statements (`;;`) and
/// comment-only text yield nothing.
pub fn split(sql: &str) -> Result<Vec<Statement<'_>>, LexError> {
    let bytes = sql.as_bytes();
    let mut lexer = Lexer {
        sql,
        bytes,
        pos: 0,
        line: 1,
    };
    let mut statements = Vec::new();
    let mut current: Option<Open> = None;
    while lexer.pos < bytes.len() {
        let c = bytes[lexer.pos];
        match c {
            b'\n' => {
                lexer.line += 1;
                lexer.pos += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\x0c' => {
                lexer.pos += 1;
                continue;
            }
            b'-' if lexer.peek(1) == Some(b'-') => {
                lexer.skip_line_comment();
                continue;
            }
            b'/' if lexer.peek(1) == Some(b'*') => {
                lexer.skip_block_comment()?;
                continue;
            }
            _ => {}
        }
        let open = current.get_or_insert_with(|| Open {
            offset: lexer.pos,
            line: lexer.line,
            words: Vec::new(),
            previous: String::new(),
            parens: 0,
            blocks: 0,
            concurrently: false,
            copy_from_stdin: false,
        });
        match c {
            b';' if open.parens == 0 && open.blocks == 0 => {
                let open = current.take().expect("set above");
                if open.offset < lexer.pos {
                    let text = sql[open.offset..lexer.pos].trim_end();
                    statements.push(open.finish(text));
                }
                lexer.pos += 1;
            }
            b'(' => {
                open.parens += 1;
                lexer.pos += 1;
            }
            b')' => {
                open.parens = open.parens.saturating_sub(1);
                lexer.pos += 1;
            }
            b'\'' => lexer.skip_string(false)?,
            b'"' => lexer.skip_quoted_identifier()?,
            b'$' => lexer.skip_dollar()?,
            c if is_identifier_start(c) => {
                let word = lexer.identifier();
                if (word == "e" || word == "E") && lexer.peek(0) == Some(b'\'') {
                    lexer.skip_string(true)?;
                    continue;
                }
                open.word(word.to_ascii_lowercase());
            }
            _ => lexer.pos += 1,
        }
    }
    if let Some(open) = current {
        let text = sql[open.offset..].trim_end();
        if !text.is_empty() {
            statements.push(open.finish(text));
        }
    }
    Ok(statements)
}

/// The table an index statement works on, as the statement names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexTarget {
    /// `CREATE INDEX ... ON table`, `REINDEX TABLE table`.
    Table(String),
    /// `REINDEX INDEX index`: the table is the index's.
    Index(String),
}

/// What a `CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON
/// [ONLY] table` or `REINDEX [(...)] INDEX|TABLE [CONCURRENTLY] name`
/// statement works on, as written (`app.t`, `"Odd Name"`), for the
/// server's `to_regclass`; `None` for any other statement.
pub fn index_target(statement: &str) -> Option<IndexTarget> {
    let mut tokens: Tokens = prefix_tokens(statement, 40).into_iter().peekable();
    let keyword = |tokens: &mut Tokens, word: &str| {
        tokens.next_if(|t| t.eq_ignore_ascii_case(word)).is_some()
    };
    if keyword(&mut tokens, "reindex") {
        if keyword(&mut tokens, "(") {
            // Options: (VERBOSE, TABLESPACE x, CONCURRENTLY ...).
            while !keyword(&mut tokens, ")") {
                tokens.next()?;
            }
        }
        let index = if keyword(&mut tokens, "index") {
            true
        } else if keyword(&mut tokens, "table") {
            false
        } else {
            return None;
        };
        keyword(&mut tokens, "concurrently");
        let name = qualified_name(&mut tokens)?;
        return Some(if index {
            IndexTarget::Index(name)
        } else {
            IndexTarget::Table(name)
        });
    }
    if !keyword(&mut tokens, "create") {
        return None;
    }
    keyword(&mut tokens, "unique");
    if !keyword(&mut tokens, "index") {
        return None;
    }
    keyword(&mut tokens, "concurrently");
    if keyword(&mut tokens, "if")
        && !(keyword(&mut tokens, "not") && keyword(&mut tokens, "exists"))
    {
        return None;
    }
    if !keyword(&mut tokens, "on") {
        // The index's own name, never schema-qualified.
        tokens.next()?;
        if !keyword(&mut tokens, "on") {
            return None;
        }
    }
    keyword(&mut tokens, "only");
    qualified_name(&mut tokens).map(IndexTarget::Table)
}

/// `name` or `schema.name`, each part as written (quoted or not).
type Tokens = std::iter::Peekable<std::vec::IntoIter<String>>;

fn qualified_name(tokens: &mut Tokens) -> Option<String> {
    let is_name =
        |t: &String| t.starts_with('"') || t.bytes().next().is_some_and(is_identifier_start);
    let mut name = tokens.next_if(is_name)?;
    while tokens.next_if(|t| t == ".").is_some() {
        name.push('.');
        name.push_str(&tokens.next_if(is_name)?);
    }
    Some(name)
}

/// The first `limit` tokens of a statement: words, quoted identifiers (with
/// their quotes) and single punctuation characters; comments skipped.
fn prefix_tokens(text: &str, limit: usize) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() && tokens.len() < limit {
        let c = bytes[pos];
        if c.is_ascii_whitespace() {
            pos += 1;
        } else if text[pos..].starts_with("--") {
            pos = text[pos..].find('\n').map_or(bytes.len(), |n| pos + n);
        } else if text[pos..].starts_with("/*") {
            pos = text[pos + 2..]
                .find("*/")
                .map_or(bytes.len(), |n| pos + n + 4);
        } else if c == b'"' {
            let start = pos;
            pos += 1;
            loop {
                match bytes.get(pos) {
                    None => return tokens,
                    Some(b'"') if bytes.get(pos + 1) == Some(&b'"') => pos += 2,
                    Some(b'"') => break,
                    Some(_) => pos += 1,
                }
            }
            pos += 1;
            tokens.push(text[start..pos].to_owned());
        } else if is_identifier_start(c) {
            let start = pos;
            while pos < bytes.len() && is_identifier_char(bytes[pos]) {
                pos += 1;
            }
            tokens.push(text[start..pos].to_owned());
        } else {
            let len = text[pos..].chars().next().map_or(1, char::len_utf8);
            tokens.push(text[pos..pos + len].to_owned());
            pos += len;
        }
    }
    tokens
}

/// A statement being read.
struct Open {
    offset: usize,
    line: usize,
    words: Vec<String>,
    previous: String,
    parens: usize,
    blocks: usize,
    concurrently: bool,
    copy_from_stdin: bool,
}

impl Open {
    /// Takes in the next word (an identifier or keyword, lower-case).
    fn word(&mut self, word: String) {
        // As psql does: only in `CREATE [OR REPLACE] FUNCTION|PROCEDURE`
        // and outside parentheses does BEGIN open a block (a
        // `BEGIN ATOMIC ... END` body) that END closes, with CASE ... END
        // counted inside it; semicolons in a block do not end the statement.
        // Elsewhere `begin` and `end` are ordinary words (a column may be
        // called `begin`).
        let routine = matches!(
            self.words.iter().map(String::as_str).collect::<Vec<_>>()[..],
            ["create", "function" | "procedure", ..]
                | ["create", "or", "replace", "function" | "procedure", ..]
        );
        if routine && self.parens == 0 {
            match word.as_str() {
                "begin" => self.blocks += 1,
                "case" if self.blocks > 0 => self.blocks += 1,
                "end" => self.blocks = self.blocks.saturating_sub(1),
                _ => {}
            }
        }
        match word.as_str() {
            "concurrently" => self.concurrently = true,
            "stdin"
                if self.previous == "from" && self.words.first().is_some_and(|w| w == "copy") =>
            {
                self.copy_from_stdin = true
            }
            _ => {}
        }
        if self.words.len() < 4 {
            self.words.push(word.clone());
        }
        self.previous = word;
    }

    fn finish(self, text: &str) -> Statement<'_> {
        Statement {
            text,
            offset: self.offset,
            line: self.line,
            words: self.words,
            concurrently: self.concurrently,
            copy_from_stdin: self.copy_from_stdin,
        }
    }
}

struct Lexer<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

fn is_identifier_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_identifier_char(c: u8) -> bool {
    is_identifier_start(c) || c.is_ascii_digit() || c == b'$'
}

impl<'a> Lexer<'a> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    /// Advances over `n` bytes, counting lines.
    fn advance(&mut self, n: usize) {
        let end = (self.pos + n).min(self.bytes.len());
        self.line += self.bytes[self.pos..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = end;
    }

    fn skip_line_comment(&mut self) {
        while let Some(c) = self.peek(0) {
            if c == b'\n' {
                return;
            }
            self.pos += 1;
        }
    }

    /// `/* ... */`, which nests in PostgreSQL.
    fn skip_block_comment(&mut self) -> Result<(), LexError> {
        let line = self.line;
        let mut depth = 0usize;
        while self.pos < self.bytes.len() {
            match (self.bytes[self.pos], self.peek(1)) {
                (b'/', Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => self.advance(1),
            }
        }
        Err(LexError {
            line,
            what: "a /* comment",
        })
    }

    /// `'...'` (`''` is a quote) or, with `escapes`, `E'...'` (where a
    /// backslash also escapes the next character).
    fn skip_string(&mut self, escapes: bool) -> Result<(), LexError> {
        let line = self.line;
        self.pos += 1;
        while self.pos < self.bytes.len() {
            match self.bytes[self.pos] {
                b'\\' if escapes => self.advance(2),
                b'\'' if self.peek(1) == Some(b'\'') => self.pos += 2,
                b'\'' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => self.advance(1),
            }
        }
        Err(LexError {
            line,
            what: "a quoted string",
        })
    }

    fn skip_quoted_identifier(&mut self) -> Result<(), LexError> {
        let line = self.line;
        self.pos += 1;
        while self.pos < self.bytes.len() {
            match self.bytes[self.pos] {
                b'"' if self.peek(1) == Some(b'"') => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => self.advance(1),
            }
        }
        Err(LexError {
            line,
            what: "a quoted identifier",
        })
    }

    /// `$tag$ ... $tag$` (the tag may be empty); a `$` that opens no
    /// dollar quote (`$1`) is skipped.
    fn skip_dollar(&mut self) -> Result<(), LexError> {
        let tag_len = self.bytes[self.pos + 1..]
            .iter()
            .take_while(|&&c| is_identifier_start(c) || c.is_ascii_digit())
            .count();
        let starts_well = tag_len == 0 || is_identifier_start(self.bytes[self.pos + 1]);
        if !starts_well || self.peek(1 + tag_len) != Some(b'$') {
            self.pos += 1;
            return Ok(());
        }
        let delimiter = &self.sql[self.pos..self.pos + tag_len + 2];
        let line = self.line;
        let body_start = self.pos + delimiter.len();
        match self.sql[body_start..].find(delimiter) {
            Some(at) => {
                self.advance(delimiter.len() + at + delimiter.len());
                Ok(())
            }
            None => Err(LexError {
                line,
                what: "a dollar-quoted string",
            }),
        }
    }

    fn identifier(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek(0).is_some_and(is_identifier_char) {
            self.pos += 1;
        }
        &self.sql[start..self.pos]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_sets_are_told_from_transaction_ones() {
        let kinds: Vec<bool> = split(
            "SET search_path TO app; set local lock_timeout = 0; SET ROLE owner; \
             SET TRANSACTION READ ONLY; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; \
             SET SESSION work_mem = '1MB'; SET CONSTRAINTS ALL DEFERRED; SELECT 1; \
             /* c */ Set maintenance_work_mem = '1GB'",
        )
        .unwrap()
        .iter()
        .map(Statement::is_session_set)
        .collect();
        assert_eq!(
            kinds,
            [true, false, true, false, false, true, false, false, true]
        );
    }

    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).unwrap().into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_on_semicolons_outside_everything() {
        assert_eq!(
            texts("CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n\nSELECT 1"),
            [
                "CREATE TABLE a (id int)",
                "INSERT INTO a VALUES (1)",
                "SELECT 1"
            ]
        );
        assert_eq!(
            texts(" ;; -- only a comment\n/* and another */ ;"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn quotes_comments_and_dollar_quotes_hide_semicolons() {
        let sql = "SELECT 'a;b', 'it''s;', E'\\';x', \"we;ird\"\"id\";\n\
                   -- a comment; with a semicolon\n\
                   /* block; /* nested; */ still comment; */ SELECT 2;\n\
                   DO $$ BEGIN PERFORM 1; END $$;\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;\n\
                   SELECT $1, a$b FROM t;";
        assert_eq!(
            texts(sql),
            [
                "SELECT 'a;b', 'it''s;', E'\\';x', \"we;ird\"\"id\"",
                "SELECT 2",
                "DO $$ BEGIN PERFORM 1; END $$",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$",
                "SELECT $1, a$b FROM t",
            ]
        );
    }

    #[test]
    fn standard_strings_keep_backslashes() {
        // With standard_conforming_strings on, '\' is a one-character string.
        assert_eq!(texts("SELECT '\\'; SELECT 2;"), ["SELECT '\\'", "SELECT 2"]);
    }

    #[test]
    fn begin_atomic_bodies_and_case_keep_their_semicolons() {
        let sql = "CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql\n\
                   BEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN a ELSE 0 END + b;\n  SELECT 1;\nEND;\n\
                   SELECT CASE WHEN true THEN 1 END;";
        let statements = split(sql).unwrap();
        assert_eq!(statements.len(), 2, "{statements:#?}");
        assert!(statements[0].text.ends_with("END"));
        assert_eq!(statements[1].line, 6);
    }

    /// A column may be called `begin` or `end` (they are not reserved):
    /// only a routine body's BEGIN opens a block.
    #[test]
    fn begin_and_end_are_ordinary_words_outside_routine_bodies() {
        assert_eq!(
            texts(
                "CREATE INDEX CONCURRENTLY p_begin ON periods (begin);\nCREATE INDEX CONCURRENTLY p_end ON periods (\"end\");"
            ),
            [
                "CREATE INDEX CONCURRENTLY p_begin ON periods (begin)",
                "CREATE INDEX CONCURRENTLY p_end ON periods (\"end\")",
            ]
        );
        let statements =
            split("ALTER TABLE periods ADD COLUMN note text;\nCOMMENT ON COLUMN periods.begin IS 'start';\nCOMMIT;\nSELECT 2;")
                .unwrap();
        assert_eq!(statements.len(), 4);
        assert_eq!(
            statements[2].transaction_control().as_deref(),
            Some("COMMIT")
        );
        // CASE ... END outside a routine keeps nothing open either.
        assert_eq!(texts("SELECT CASE WHEN true THEN 1 END; SELECT 2").len(), 2);
        // A procedure's body does.
        assert_eq!(
            texts("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END; CALL p();").len(),
            2
        );
    }

    #[test]
    fn flags_concurrent_and_copy_from_stdin_statements() {
        let statements = split(
            "CREATE INDEX CONCURRENTLY i ON t (a);\nCOPY t FROM STDIN;\nCOPY t TO STDOUT;\nSELECT 'concurrently';",
        )
        .unwrap();
        let flags: Vec<(bool, bool)> = statements
            .iter()
            .map(|s| (s.concurrently, s.copy_from_stdin))
            .collect();
        assert_eq!(
            flags,
            [(true, false), (false, true), (false, false), (false, false)]
        );
    }

    #[test]
    fn lines_and_offsets_point_at_the_first_token() {
        let sql = "-- header\n\nSELECT 1;\n  /* c */ SELECT\n 2;";
        let statements = split(sql).unwrap();
        assert_eq!((statements[0].line, statements[0].offset), (3, 11));
        assert_eq!(statements[1].line, 4);
        assert_eq!(&sql[statements[1].offset..][..6], "SELECT");
    }

    #[test]
    fn unclosed_constructs_name_their_line() {
        for (sql, what, line) in [
            ("SELECT 1;\nSELECT 'oops;", "a quoted string", 2),
            ("SELECT 1; /* never\n closed", "a /* comment", 1),
            ("\n\nDO $x$ BEGIN END", "a dollar-quoted string", 3),
            ("SELECT \"bad", "a quoted identifier", 1),
        ] {
            assert_eq!(split(sql).unwrap_err(), LexError { line, what }, "{sql}");
        }
    }

    /// Arbitrary mixes of the tricky pieces never panic, and every
    /// statement is a slice of the input at its offset.
    #[test]
    fn never_panics_on_arbitrary_input() {
        const PIECES: [&str; 22] = [
            "'", "\"", "$", "$$", "$a$", "$1", "--", "/*", "*/", ";", "(", ")", "\n", "é", "E'",
            "\\", "BEGIN", "CASE", "END", " ", "x", "€$",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let mut sql = String::new();
            for _ in 0..(seed % 24) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                sql.push_str(PIECES[(seed % PIECES.len() as u64) as usize]);
            }
            if let Ok(statements) = split(&sql) {
                for s in statements {
                    assert!(sql[s.offset..].starts_with(s.text), "{sql:?}");
                }
            }
        }
    }

    #[test]
    fn locations_count_lines_and_characters() {
        let text = "SELECT 1;\n\tCREATE TABEL é (id int);\r\nSELECT 3;";
        let at = text.find("TABEL").unwrap();
        let location = locate(text, at);
        assert_eq!((location.line, location.column), (2, 9));
        assert_eq!(location.text, "\tCREATE TABEL é (id int);");
        assert_eq!(
            location.excerpt(),
            "  2 | \tCREATE TABEL é (id int);\n    | \t       ^"
        );
        // The server counts characters, not bytes.
        let after_e = text.find("(id").unwrap();
        let position = text[..after_e].chars().count() as u32 + 1;
        assert_eq!(position_to_offset(text, position), after_e);
        assert_eq!(locate(text, text.len()).line, 3);
    }

    fn control(sql: &str) -> Vec<String> {
        split(sql)
            .unwrap()
            .iter()
            .filter_map(Statement::transaction_control)
            .collect()
    }

    #[test]
    fn finds_transaction_control_statements() {
        assert_eq!(
            control(
                "BEGIN; begin transaction; START TRANSACTION; COMMIT; commit and chain; END;\n\
                 ROLLBACK; rollback work; ABORT; PREPARE TRANSACTION 'x'"
            ),
            [
                "BEGIN",
                "BEGIN",
                "START TRANSACTION",
                "COMMIT",
                "COMMIT",
                "END",
                "ROLLBACK",
                "ROLLBACK",
                "ABORT",
                "PREPARE TRANSACTION"
            ]
        );
    }

    #[test]
    fn savepoints_blocks_and_words_inside_statements_are_not_transaction_control() {
        assert!(
            control(
                "SAVEPOINT s; ROLLBACK TO SAVEPOINT s; ROLLBACK TO s; rollback work to s;\n\
             RELEASE SAVEPOINT s;\n\
             DO $$ BEGIN COMMIT; END $$;\n\
             CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n\
             SELECT CASE WHEN true THEN 1 END AS begin;\n\
             PREPARE q AS SELECT 1; START_X;"
            )
            .is_empty()
        );
    }

    #[test]
    fn index_target_names_the_table_an_index_statement_works_on() {
        let table = |t: &str| Some(IndexTarget::Table(t.to_owned()));
        let cases = [
            ("CREATE INDEX CONCURRENTLY i ON t (a)", table("t")),
            (
                "create unique index concurrently if not exists users_email ON app.users (email)",
                table("app.users"),
            ),
            (
                "CREATE INDEX ON ONLY \"Odd \"\"T\"\"\" (a)",
                table("\"Odd \"\"T\"\"\""),
            ),
            (
                "CREATE INDEX /* c */ CONCURRENTLY -- c\n \"i\" ON \"s\".t USING btree (a)",
                table("\"s\".t"),
            ),
            ("CREATE INDEX i ON t (a)", table("t")),
            (
                "REINDEX (VERBOSE) INDEX CONCURRENTLY app.t_x",
                Some(IndexTarget::Index("app.t_x".into())),
            ),
            ("reindex table t", table("t")),
            ("REINDEX SCHEMA app", None),
            ("CREATE INDEX CONCURRENTLY IF EXISTS i ON t (a)", None),
            ("CREATE TABLE t (a int)", None),
            ("SELECT 'CREATE INDEX i ON t'", None),
        ];
        for (statement, expected) in cases {
            assert_eq!(index_target(statement), expected, "{statement}");
        }
    }
}
