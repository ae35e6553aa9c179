//! Tests of the event loop driven through channels on an in-memory terminal, which the test
//! reads while the loop runs.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::{TestBackend, WindowSize};
use ratatui::buffer::Cell;
use ratatui::layout::{Position, Size};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::{sleep, timeout};

use super::*;
use crate::model::{Delivery, UiOptions};
use crate::shared_backend::SharedBackend;
use crate::test_support::*;

const PATIENCE: Duration = Duration::from_secs(10);

/// The shared in-memory terminal, with a wait for text to appear.
#[derive(Clone)]
struct Shared(SharedBackend);

impl Shared {
    fn new(width: u16, height: u16) -> Self {
        Shared(SharedBackend::new(width, height))
    }

    fn screen(&self) -> String {
        self.0.screen()
    }

    fn frames(&self) -> usize {
        self.0.frames()
    }

    /// Waits until the screen shows `text`.
    async fn wait_for(&self, text: &str) {
        let found = timeout(PATIENCE, async {
            while !self.screen().contains(text) {
                sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(found.is_ok(), "never showed {text:?}:\n{}", self.screen());
    }
}

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl_c() -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))
}

/// The next action that is not a MarkRead.
async fn next_action(actions: &mut UnboundedReceiver<Action>) -> Option<Action> {
    timeout(PATIENCE, async {
        loop {
            match actions.recv().await {
                Some(Action::MarkRead { .. }) => continue,
                other => return other,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

fn alice_first() -> UiOptions {
    UiOptions {
        select_contact: Some("alice".into()),
        focus_input: true,
        ..UiOptions::default()
    }
}

#[tokio::test]
async fn typing_sends_delivery_shows_and_q_quits() {
    let backend = Shared::new(80, 24);
    let (keys, input) = unbounded_channel();
    let (backend_events, events) = unbounded_channel();
    let (actions, mut asked) = unbounded_channel();
    backend_events.send(demo_snapshot()).unwrap();
    backend_events.send(AppEvent::Status(healthy())).unwrap();
    let mut terminal = Terminal::new(backend.0.clone()).unwrap();
    let ui =
        tokio::spawn(
            async move { run(&mut terminal, input, events, actions, alice_first()).await },
        );

    for c in "hello".chars() {
        keys.send(key(KeyCode::Char(c))).unwrap();
    }
    keys.send(key(KeyCode::Enter)).unwrap();
    assert_eq!(
        next_action(&mut asked).await,
        Some(Action::Composing {
            contact: "alice".into()
        })
    );
    assert_eq!(
        next_action(&mut asked).await,
        Some(Action::Send {
            contact: "alice".into(),
            text: "hello".into()
        })
    );

    let sent = message(50, "alice", "hello", T + 500, Some(Delivery::Sending));
    backend_events.send(AppEvent::MessageAdded(sent)).unwrap();
    backend.wait_for("me    hello …").await;
    backend_events
        .send(AppEvent::DeliveryChanged {
            id: "0032".into(),
            delivery: Delivery::Stored { copies: 3 },
        })
        .unwrap();
    backend.wait_for("me    hello ✓3").await;
    backend_events
        .send(AppEvent::DeliveryChanged {
            id: "0032".into(),
            delivery: Delivery::Delivered,
        })
        .unwrap();
    backend.wait_for("me    hello ✓✓").await;

    // q in the input line is text; from the contacts pane it quits.
    keys.send(key(KeyCode::Esc)).unwrap();
    keys.send(key(KeyCode::Char('q'))).unwrap();
    let result = timeout(PATIENCE, ui).await.unwrap().unwrap();
    assert!(result.is_ok());
    assert_eq!(next_action(&mut asked).await, Some(Action::Quit));
}

#[tokio::test]
async fn the_ui_outlives_its_backend() {
    let backend = Shared::new(80, 24);
    let (keys, input) = unbounded_channel();
    let (backend_events, events) = unbounded_channel();
    let (actions, mut asked) = unbounded_channel();
    backend_events.send(demo_snapshot()).unwrap();
    drop(backend_events);
    asked.close();
    let mut terminal = Terminal::new(backend.0.clone()).unwrap();
    let ui =
        tokio::spawn(
            async move { run(&mut terminal, input, events, actions, alice_first()).await },
        );
    backend.wait_for("the messaging backend has stopped").await;
    for c in "still here".chars() {
        keys.send(key(KeyCode::Char(c))).unwrap();
    }
    keys.send(key(KeyCode::Enter)).unwrap();
    backend.wait_for("nothing can be sent").await;
    keys.send(ctrl_c()).unwrap();
    let result = timeout(PATIENCE, ui).await.unwrap().unwrap();
    assert!(result.is_ok());
}

#[tokio::test]
async fn closed_input_ends_the_ui_with_an_error_after_quit() {
    let backend = Shared::new(80, 24);
    let (keys, input) = unbounded_channel::<Event>();
    let (_backend_events, events) = unbounded_channel();
    let (actions, mut asked) = unbounded_channel();
    let mut terminal = Terminal::new(backend.0.clone()).unwrap();
    drop(keys);
    let result = timeout(
        PATIENCE,
        run(&mut terminal, input, events, actions, UiOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(
        result.map_err(|e| e.kind()),
        Err(io::ErrorKind::UnexpectedEof)
    );
    assert_eq!(next_action(&mut asked).await, Some(Action::Quit));
}

#[tokio::test]
async fn resizes_redraw_at_the_new_size() {
    let backend = Shared::new(80, 24);
    let (keys, input) = unbounded_channel();
    let (backend_events, events) = unbounded_channel();
    let (actions, _asked) = unbounded_channel();
    backend_events.send(demo_snapshot()).unwrap();
    let mut terminal = Terminal::new(backend.0.clone()).unwrap();
    let ui =
        tokio::spawn(
            async move { run(&mut terminal, input, events, actions, alice_first()).await },
        );
    backend.wait_for("this one failed").await;
    backend.0.resize(30, 6);
    keys.send(Event::Resize(30, 6)).unwrap();
    backend.wait_for("terminal too small").await;
    backend.0.resize(100, 30);
    keys.send(Event::Resize(100, 30)).unwrap();
    backend.wait_for("this one failed").await;
    assert_eq!(backend.screen().lines().count(), 30);
    keys.send(ctrl_c()).unwrap();
    assert!(timeout(PATIENCE, ui).await.unwrap().unwrap().is_ok());
}

#[tokio::test]
async fn bursts_are_drawn_once() {
    let backend = Shared::new(80, 24);
    let (keys, input) = unbounded_channel();
    let (backend_events, events) = unbounded_channel();
    let (actions, _asked) = unbounded_channel();
    backend_events.send(demo_snapshot()).unwrap();
    for i in 0..200 {
        let m = message(
            1000 + i,
            "alice",
            &format!("burst {i}"),
            T + 1000 + u64::from(i),
            None,
        );
        backend_events.send(AppEvent::MessageAdded(m)).unwrap();
    }
    keys.send(ctrl_c()).unwrap();
    let mut terminal = Terminal::new(backend.0.clone()).unwrap();
    let result = run(&mut terminal, input, events, actions, alice_first()).await;
    assert!(result.is_ok());
    assert!(backend.frames() <= 3, "{} frames", backend.frames());
}

/// A terminal whose every draw fails, as when the tty goes away.
struct Broken(TestBackend);

impl Backend for Broken {
    fn draw<'a, I>(&mut self, _content: I) -> io::Result<()>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "terminal gone"))
    }
    fn hide_cursor(&mut self) -> io::Result<()> {
        self.0.hide_cursor()
    }
    fn show_cursor(&mut self) -> io::Result<()> {
        self.0.show_cursor()
    }
    fn get_cursor_position(&mut self) -> io::Result<Position> {
        self.0.get_cursor_position()
    }
    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> io::Result<()> {
        self.0.set_cursor_position(position)
    }
    fn clear(&mut self) -> io::Result<()> {
        self.0.clear()
    }
    fn size(&self) -> io::Result<Size> {
        self.0.size()
    }
    fn window_size(&mut self) -> io::Result<WindowSize> {
        self.0.window_size()
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[tokio::test]
async fn a_failing_terminal_ends_the_ui_and_tells_the_backend() {
    let (_keys, input) = unbounded_channel::<Event>();
    let (_backend_events, events) = unbounded_channel();
    let (actions, mut asked) = unbounded_channel();
    let mut terminal = Terminal::new(Broken(TestBackend::new(80, 24))).unwrap();
    let result = run(&mut terminal, input, events, actions, UiOptions::default()).await;
    assert_eq!(result.map_err(|e| e.kind()), Err(io::ErrorKind::BrokenPipe));
    assert_eq!(next_action(&mut asked).await, Some(Action::Quit));
}
