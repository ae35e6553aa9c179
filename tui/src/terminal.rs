//! The real terminal: reading its events on a thread of their own, and the setup and the
//! guaranteed restore around the chat UI (raw mode, the alternate screen, bracketed paste,
//! the cursor), whether the UI ends normally, with an error, or by a panic anywhere.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{
    self, DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    Event,
};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use thiserror::Error;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use super::app::App;
use super::event_loop::{drive, Outside};
use super::external_editor;
use super::model::{Action, AppEvent, UiOptions};

/// How often the input thread looks up from waiting to see whether the UI has gone.
const INPUT_POLL: Duration = Duration::from_millis(100);

/// Why the chat UI could not run.
#[derive(Debug, Error)]
pub enum UiError {
    /// Standard input or output is not an interactive terminal.
    #[error("the chat needs an interactive terminal (standard input and output are not one)")]
    NotATerminal,
    /// The terminal could not be put into full-screen mode.
    #[error("could not set up the terminal: {0}")]
    Setup(#[source] io::Error),
    /// Drawing or reading the terminal failed.
    #[error("terminal error: {0}")]
    Terminal(#[from] io::Error),
    /// Something in the program panicked; the terminal was restored first.
    #[error("the chat stopped after an internal error (a panic, reported above)")]
    Panicked,
}

/// Starts a thread that reads terminal events and forwards them; it ends when the receiver
/// is dropped or the terminal cannot be read (which closes the channel).
pub fn spawn_terminal_input() -> UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("terminal-input".to_owned())
        .spawn(move || read_events(&tx));
    // If no thread could be started, the sender is gone and the UI sees input end.
    drop(spawned);
    rx
}

/// Set while another program (the editor) has the terminal: the input thread stops reading.
static INPUT_PAUSED: AtomicBool = AtomicBool::new(false);
/// Set by the input thread once it has stopped reading for [`INPUT_PAUSED`].
static INPUT_PARKED: AtomicBool = AtomicBool::new(false);

fn read_events(tx: &UnboundedSender<Event>) {
    while !tx.is_closed() {
        if INPUT_PAUSED.load(Ordering::Acquire) {
            INPUT_PARKED.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        INPUT_PARKED.store(false, Ordering::Release);
        match event::poll(INPUT_POLL) {
            Ok(false) => continue,
            Ok(true) => match event::read() {
                Ok(event) => {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Err(_) => return,
        }
    }
}

/// Whether this process has the terminal in full-screen mode (so restoring it twice, from
/// the panic hook and from the guard, is harmless).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back as it was: raw mode off, main screen, no bracketed paste, cursor
/// shown. Errors are ignored: there is nothing better to do while leaving.
fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::AcqRel) {
        let _ = disable_raw_mode();
        let _ = execute!(
            io::stdout(),
            DisableBracketedPaste,
            DisableMouseCapture,
            LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// Puts the terminal in full-screen mode: raw mode, the alternate screen, bracketed paste,
/// the mouse.
fn enter_terminal() -> io::Result<()> {
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::Release);
    execute!(
        io::stdout(),
        EnterAlternateScreen,
        EnableBracketedPaste,
        EnableMouseCapture
    )
}

/// Restores the terminal when dropped, on every way out of [`run_in_terminal`].
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        let guard = TerminalGuard;
        enter_terminal()?;
        Ok(guard)
    }
}

/// Hands the terminal to `$VISUAL`/`$EDITOR` on `text` (see [`crate::external_editor`]):
/// stops reading input, leaves full-screen mode, runs the editor, and takes the terminal
/// back whatever happened.
fn suspend_and_edit(text: &str, dir: &Path) -> Result<String, String> {
    INPUT_PAUSED.store(true, Ordering::Release);
    // The input thread looks up at least every INPUT_POLL; wait for it, within reason.
    let deadline = std::time::Instant::now() + 10 * INPUT_POLL;
    while !INPUT_PARKED.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    restore_terminal();
    let result = external_editor::edit_text(dir, text, &external_editor::editor_command());
    let resumed = enter_terminal();
    INPUT_PAUSED.store(false, Ordering::Release);
    match (result, resumed) {
        (_, Err(e)) => Err(format!("could not take the terminal back: {e}")),
        (Ok(text), Ok(())) => Ok(text),
        (Err(e), Ok(())) => Err(e.to_string()),
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Writes `bytes` to the terminal beside the screen (a bell, an OSC 52 copy).
fn raw(bytes: &[u8]) {
    use std::io::Write;
    let mut out = io::stdout();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

/// Resolves when the process is asked to stop: SIGTERM, SIGHUP (the terminal was closed) or
/// SIGINT (sent by another process: in raw mode Ctrl-C arrives as a key). Never resolves if
/// the handlers cannot be installed.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

/// Runs the chat UI full-screen in this process's terminal until the user quits, then
/// puts the terminal back. The terminal is restored on return, on error and on a panic in
/// any thread: a panic hook restores it before the previous hook prints the report, and
/// the UI then ends with [`UiError::Panicked`]. The backend is sent [`Action::Quit`] on
/// every way out.
pub async fn run_in_terminal(
    events: UnboundedReceiver<AppEvent>,
    actions: UnboundedSender<Action>,
    options: UiOptions,
) -> Result<(), UiError> {
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        let _ = actions.send(Action::Quit);
        return Err(UiError::NotATerminal);
    }
    let edit_dir = options.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut app = App::new(options);
    app.set_time_zone(jiff::tz::TimeZone::system());
    let outside = Outside {
        raw,
        edit: suspend_and_edit,
        edit_dir,
    };

    let panicked = Arc::new(Notify::new());
    let previous = Arc::new(std::panic::take_hook());
    {
        let previous = previous.clone();
        let panicked = panicked.clone();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            panicked.notify_one();
            previous(info);
        }));
    }

    let result = async {
        let _guard = TerminalGuard::enter().map_err(UiError::Setup)?;
        // From here on, drive() or the panic branch tells the backend the UI is gone.
        let mut terminal =
            Terminal::new(CrosstermBackend::new(io::stdout())).map_err(UiError::Setup)?;
        terminal.clear().map_err(UiError::Setup)?;
        let input = spawn_terminal_input();
        tokio::select! {
            result = drive(&mut terminal, &mut app, input, events, actions.clone(), &outside) => {
                result.map_err(UiError::Terminal)
            }
            () = panicked.notified() => {
                let _ = actions.send(Action::Quit);
                Err(UiError::Panicked)
            }
            () = stop_signal() => {
                // Leaving this block restores the terminal, as a quit would.
                let _ = actions.send(Action::Quit);
                Ok(())
            }
        }
    }
    .await;

    // Put the previous hook back (ours only restored a terminal that is now restored).
    let _ours = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    if matches!(result, Err(UiError::Setup(_))) {
        let _ = actions.send(Action::Quit);
    }
    result
}
