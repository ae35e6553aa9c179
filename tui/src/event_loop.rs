//! The chat UI's event loop: terminal input and backend events in, actions and redraws
//! out. It never waits on the backend: events arrive on one unbounded channel and actions
//! leave on another, so a circuit being built in the background never freezes the screen.

use std::io;
use std::time::Duration;

use crossterm::event::Event;
use ratatui::backend::Backend;
use ratatui::Terminal;
use shallot_rt::unix_now;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::app::App;
use super::model::{Action, AppEvent, UiOptions};

/// The most events applied before the screen is redrawn, so a flood from the backend
/// cannot starve the keyboard.
const BURST: usize = 256;
/// How often the clock-driven parts (the consensus age) are brought up to date.
const TICK: Duration = Duration::from_secs(1);

/// Runs the chat UI on `terminal` until the user quits: reads terminal `input` and backend
/// `events`, redraws after each burst of them, and sends the user's `actions`. It sends
/// [`Action::Quit`] before returning, whether the user quit or something failed. A closed
/// `input` ends it with an error; a closed `events` only means the backend has stopped,
/// which the status bar then says.
pub async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    input: UnboundedReceiver<Event>,
    events: UnboundedReceiver<AppEvent>,
    actions: UnboundedSender<Action>,
    options: UiOptions,
) -> io::Result<()> {
    let outside = Outside {
        raw: |_| {},
        edit: |_, _| Err("no editor here".to_owned()),
        edit_dir: std::env::temp_dir(),
    };
    let mut app = App::new(options);
    drive(terminal, &mut app, input, events, actions, &outside).await
}

/// What the app owes the terminal beside the screen, and how it is paid.
pub(super) struct Outside {
    /// Writes bytes to the terminal (a bell, an OSC 52 copy, a notification).
    pub(super) raw: fn(&[u8]),
    /// Hands the terminal to the user's editor on a draft (in `edit_dir`) and returns the
    /// text written, or why not.
    pub(super) edit: fn(&str, &std::path::Path) -> Result<String, String>,
    /// Where drafts are written for the editor.
    pub(super) edit_dir: std::path::PathBuf,
}

/// Sends `list`; a backend that has gone is noted once, and the UI carries on.
fn send_all(app: &mut App, actions: &UnboundedSender<Action>, list: Vec<Action>) {
    for action in list {
        if actions.send(action).is_err() && !app.should_quit() {
            app.apply(AppEvent::Notice(
                "the messaging backend has stopped: nothing can be sent".to_owned(),
            ));
        }
    }
}

/// [`run`] for an [`App`] already made (for example with its time zone set), giving
/// `outside` what the app owes the terminal beside the screen: a bell, a notification, text
/// to copy (OSC 52), a draft to write in `$EDITOR`. However it ends, the backend is told
/// [`Action::Quit`].
pub(super) async fn drive<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    input: UnboundedReceiver<Event>,
    events: UnboundedReceiver<AppEvent>,
    actions: UnboundedSender<Action>,
    outside: &Outside,
) -> io::Result<()> {
    let result = event_loop(terminal, app, input, events, &actions, outside).await;
    if result.is_err() {
        let _ = actions.send(Action::Quit);
    }
    result
}

async fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut input: UnboundedReceiver<Event>,
    mut events: UnboundedReceiver<AppEvent>,
    actions: &UnboundedSender<Action>,
    outside: &Outside,
) -> io::Result<()> {
    let mut backend_open = true;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    terminal.draw(|frame| app.render(frame))?;
    loop {
        tokio::select! {
            // The backend's news first: keys mean what they mean in the state it describes
            // (a key typed as the first snapshot arrives goes to the conversation it opens).
            // The keyboard cannot starve: the burst below takes keys first.
            biased;
            event = events.recv(), if backend_open => match event {
                Some(event) => app.apply(event),
                None => {
                    backend_open = false;
                    app.apply(AppEvent::Notice("the messaging backend has stopped".to_owned()));
                }
            },
            event = input.recv() => match event {
                Some(event) => {
                    let list = app.handle_event(event);
                    send_all(app, actions, list);
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the terminal stopped sending input",
                    ));
                }
            },
            _ = tick.tick() => app.tick(unix_now()),
        }
        // Take whatever else is already waiting before drawing once for all of it.
        for _ in 0..BURST {
            if app.should_quit() {
                break;
            }
            if let Ok(event) = input.try_recv() {
                let list = app.handle_event(event);
                send_all(app, actions, list);
            } else if let Ok(event) = events.try_recv() {
                app.apply(event);
            } else {
                break;
            }
        }
        let list = app.take_actions();
        send_all(app, actions, list);
        if app.should_quit() {
            return Ok(());
        }
        if let Some(draft) = app.take_edit_request() {
            let edited = run_editor(outside, draft).await;
            app.edited(edited);
            // The editor drew over the screen: draw all of it again.
            terminal.clear()?;
        }
        terminal.draw(|frame| app.render(frame))?;
        let raw = outside.raw;
        if app.take_bell() {
            raw(b"\x07");
        }
        if let Some(body) = app.take_notification() {
            raw(&app.notify_settings().sequence(&body));
        }
        if let Some(text) = app.take_copy() {
            raw(&super::clipboard::osc52(&text));
        }
    }
}

/// Runs the editor hook, which blocks until the user leaves the editor, without holding up
/// the runtime's other tasks where the runtime allows.
async fn run_editor(outside: &Outside, draft: String) -> Result<String, String> {
    let edit = outside.edit;
    let dir = outside.edit_dir.clone();
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    if flavor == tokio::runtime::RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| edit(&draft, &dir))
    } else {
        edit(&draft, &dir)
    }
}

#[cfg(test)]
mod tests;
