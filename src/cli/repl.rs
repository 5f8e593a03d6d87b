//! `rangedb repl`: an interactive shell over the SDK, as the original
//! README shows it (prompts `rangedb> ` and `rangedb(txn:<id>)> `, `OK`,
//! `Transaction started: <id>`, `help`, `exit` → `Goodbye!`).
//!
//! On a terminal: line editing, persistent history (`~/.rangedb/history`),
//! tab completion of command words (rustyline); Ctrl-C cancels the line,
//! Ctrl-D exits. Lines are split like a shell's (quotes, backslashes).
//! Errors print as one line and never end the session. With standard input
//! not a terminal, it runs the lines it reads (no prompts) and exits 1 if
//! any failed. Any other `rangedb` client command works too (`admin …`,
//! `batch put …`, `txn status`), parsed by the same definitions as the
//! command line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Editor, Helper};

use super::data::{print_ok, print_pairs};
use super::txn::{self, Saved};
use super::{admin, data, AdminCommand, Cli, ClusterCommand, Command};
use crate::client::Client;
use crate::error::{Error, Result};

pub const HELP: &str = "\
Available commands:
  get <key>                           Get value by key
  put <key> <value>                   Put key-value pair
  delete <key>                        Delete key
  range <start> <end> [limit]         Get range of keys
  begin                               Begin new transaction
  commit                              Commit current transaction
  rollback                            Rollback current transaction
  admin cluster status                Show cluster status
  help                                Show this help
  exit                                Exit REPL
";

const WORDS: &[&str] = &[
    "get", "put", "delete", "range", "begin", "commit", "rollback", "admin", "help", "exit",
    "quit", "batch", "txn",
];

/// A REPL session: the client and the open transaction, if any.
pub struct Session<'c> {
    client: &'c Client,
    txn: Option<Saved>,
}

/// What a line asks the loop to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The line failed and said so itself (e.g. a key not found).
    Failed,
    Exit,
}

impl<'c> Session<'c> {
    pub fn new(client: &'c Client) -> Session<'c> {
        Session { client, txn: None }
    }

    pub fn prompt(&self) -> String {
        match &self.txn {
            Some(t) => format!("rangedb(txn:{})> ", t.id),
            None => "rangedb> ".to_string(),
        }
    }

    /// Runs one line; errors come back to be printed (the session goes on).
    pub async fn line(&mut self, out: &mut impl Write, line: &str) -> Result<Flow> {
        let Some(words) = shlex::split(line) else {
            return Err(Error::InvalidArgument("unbalanced quotes".into()));
        };
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        match args.as_slice() {
            [] => {}
            ["exit"] | ["quit"] => {
                let _ = writeln!(out, "Goodbye!");
                return Ok(Flow::Exit);
            }
            ["help"] => {
                let _ = write!(out, "{HELP}");
            }
            ["get", key] => {
                let v = match &mut self.txn {
                    Some(t) => txn::get(self.client, t, key).await?,
                    None => self.client.get(key.as_bytes()).await?,
                };
                match v {
                    Some(v) => {
                        let _ = out.write_all(&v);
                        let _ = writeln!(out);
                    }
                    None => {
                        let _ = out.flush();
                        eprintln!("Error: key not found: {key}");
                        return Ok(Flow::Failed);
                    }
                }
            }
            ["put", key, value] => {
                match &mut self.txn {
                    Some(t) => txn::put(self.client, t, key, Some(value)).await?,
                    None => self.client.put(key.as_bytes(), value.as_bytes()).await?,
                }
                print_ok(out, false);
            }
            ["delete", key] => {
                match &mut self.txn {
                    Some(t) => txn::put(self.client, t, key, None).await?,
                    None => self.client.delete(key.as_bytes()).await?,
                }
                print_ok(out, false);
            }
            ["range", start, end, rest @ ..] if rest.len() <= 1 => {
                let limit = match rest.first() {
                    Some(l) => l.parse::<u32>().map_err(|_| {
                        Error::InvalidArgument(format!("limit {l:?} is not a number"))
                    })?,
                    None => 0,
                };
                let pairs = match &mut self.txn {
                    Some(t) => txn::range(self.client, t, start, end, limit).await?,
                    None => {
                        self.client
                            .scan(start.as_bytes(), end.as_bytes(), limit, false)
                            .await?
                    }
                };
                print_pairs(out, &pairs, false);
            }
            ["begin"] => {
                if let Some(t) = &self.txn {
                    return Err(Error::InvalidArgument(format!(
                        "transaction {} is open: commit or rollback first",
                        t.id
                    )));
                }
                let t = txn::begin(self.client).await?;
                let _ = writeln!(out, "Transaction started: {}", t.id);
                self.txn = Some(t);
            }
            ["commit"] => {
                let Some(mut t) = self.txn.take() else {
                    return Err(Error::InvalidArgument(
                        "no transaction is open (begin one with `begin`)".into(),
                    ));
                };
                match txn::commit(self.client, &mut t).await {
                    Ok(_) => {
                        let _ = writeln!(out, "Transaction {} committed", t.id);
                    }
                    Err(e) => {
                        if matches!(e, Error::InvalidArgument(_)) || e.is_ambiguous() {
                            self.txn = Some(t); // still open: fix and commit again
                        }
                        return Err(e);
                    }
                }
            }
            ["rollback"] => {
                let Some(t) = self.txn.take() else {
                    return Err(Error::InvalidArgument("no transaction is open".into()));
                };
                txn::release(self.client, &t).await;
                let _ = writeln!(out, "Transaction {} rolled back", t.id);
            }
            ["admin", "cluster", "status"] => admin::cluster_status_brief(out, self.client).await?,
            [cmd, ..]
                if matches!(
                    *cmd,
                    "get" | "put" | "delete" | "range" | "begin" | "commit" | "rollback" | "help"
                ) =>
            {
                return Err(Error::InvalidArgument(format!(
                    "wrong arguments for {cmd} (see `help`)"
                )));
            }
            _ => return self.command(out, &words).await,
        }
        Ok(Flow::Continue)
    }

    /// Any other `rangedb` client command.
    async fn command(&mut self, out: &mut impl Write, words: &[String]) -> Result<Flow> {
        let argv = std::iter::once("rangedb".to_string()).chain(words.iter().cloned());
        let cli = match Cli::try_parse_from(argv) {
            Ok(c) => c,
            Err(e) => {
                let text = e.to_string();
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                return Err(Error::InvalidArgument(format!(
                    "{first} (type `help` for the REPL's commands)"
                )));
            }
        };
        let json = cli.output == super::Output::Json;
        let code = match cli.command {
            Command::Server(_) | Command::Repl | Command::Bench(_) => {
                return Err(Error::InvalidArgument(
                    "run that from the shell, not inside the REPL".into(),
                ))
            }
            Command::Admin(AdminCommand::Cluster(ClusterCommand::Status)) if !json => {
                admin::cluster_status_brief(out, self.client).await?;
                return Ok(Flow::Continue);
            }
            Command::Admin(cmd) => admin::run(out, self.client, cmd, json).await?,
            Command::Txn { id, command } => {
                txn::run(out, self.client, command, id.as_deref(), json).await?
            }
            cmd => data::run(out, self.client, cmd, json).await?,
        };
        Ok(if code == ExitCode::SUCCESS {
            Flow::Continue
        } else {
            Flow::Failed
        })
    }
}

/// Tab completion of command words.
struct Words;

impl Helper for Words {}
impl Highlighter for Words {}
impl Validator for Words {}
impl Hinter for Words {
    type Hint = String;
}

impl Completer for Words {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        if head.contains(' ') {
            let sub: &[&str] = match head.split_whitespace().next() {
                Some("admin") => &["cluster", "node", "meta", "config", "split"],
                Some("txn") => &["status", "list"],
                _ => &[],
            };
            let start = head.rfind(' ').map_or(0, |i| i + 1);
            let word = &head[start..];
            let c = sub
                .iter()
                .filter(|w| w.starts_with(word))
                .map(|w| Pair {
                    display: w.to_string(),
                    replacement: format!("{w} "),
                })
                .collect();
            return Ok((start, c));
        }
        let c = WORDS
            .iter()
            .filter(|w| w.starts_with(head))
            .map(|w| Pair {
                display: w.to_string(),
                replacement: format!("{w} "),
            })
            .collect();
        Ok((0, c))
    }
}

fn history_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".rangedb").join("history"))
}

pub(super) async fn run(client: &Client) -> Result<ExitCode> {
    let mut session = Session::new(client);
    if !std::io::stdin().is_terminal() {
        return run_piped(&mut session).await;
    }
    let mut ed: Editor<Words, DefaultHistory> =
        Editor::new().map_err(|e| Error::Config(format!("cannot start the line editor: {e}")))?;
    ed.set_helper(Some(Words));
    let history = history_path();
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    loop {
        match ed.readline(&session.prompt()) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = ed.add_history_entry(line.as_str());
                }
                let mut out = std::io::stdout().lock();
                match session.line(&mut out, &line).await {
                    Ok(Flow::Exit) => break,
                    Ok(Flow::Continue | Flow::Failed) => {}
                    Err(e) => {
                        let _ = out.flush();
                        eprintln!("Error: {e}");
                    }
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                outln!("Goodbye!");
                break;
            }
            Err(e) => return Err(Error::Config(format!("reading the terminal: {e}"))),
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = ed.save_history(h);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_piped(session: &mut Session<'_>) -> Result<ExitCode> {
    let stdin = std::io::stdin();
    let mut failed = false;
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Error::Config(format!("reading standard input: {e}")))?;
        let mut out = std::io::stdout().lock();
        match session.line(&mut out, &line).await {
            Ok(Flow::Exit) => break,
            Ok(Flow::Continue) => {}
            Ok(Flow::Failed) => failed = true,
            Err(e) => {
                failed = true;
                let _ = out.flush();
                eprintln!("Error: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_the_original_readme_text() {
        assert!(HELP.starts_with("Available commands:\n  get <key>"));
        assert_eq!(HELP.lines().count(), 11);
        for l in HELP.lines().skip(1) {
            assert_eq!(l.find(|c: char| c.is_ascii_uppercase()), Some(38), "{l:?}");
        }
    }
}
