//! A terminal backend that can be read while the UI draws on it: an in-memory screen behind a
//! lock, with a count of frames drawn. Tests drive the real event loop with it.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use ratatui::backend::{Backend, ClearType, TestBackend, WindowSize};
use ratatui::buffer::Cell;
use ratatui::layout::{Position, Size};

use super::render::buffer_text;

/// An in-memory terminal, shareable between the UI (which draws) and a test (which reads).
#[derive(Clone)]
pub struct SharedBackend(Arc<Mutex<(TestBackend, usize)>>);

impl SharedBackend {
    /// A `width` × `height` screen.
    pub fn new(width: u16, height: u16) -> Self {
        SharedBackend(Arc::new(Mutex::new((TestBackend::new(width, height), 0))))
    }

    fn lock(&self) -> MutexGuard<'_, (TestBackend, usize)> {
        shallot_rt::lock(&self.0)
    }

    /// The screen as text, one line per row.
    pub fn screen(&self) -> String {
        buffer_text(self.lock().0.buffer())
    }

    /// Frames drawn so far.
    pub fn frames(&self) -> usize {
        self.lock().1
    }

    /// Changes the screen size, as a terminal resize would.
    pub fn resize(&self, width: u16, height: u16) {
        self.lock().0.resize(width, height);
    }
}

impl Backend for SharedBackend {
    fn draw<'a, I>(&mut self, content: I) -> io::Result<()>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        self.lock().0.draw(content)
    }
    fn hide_cursor(&mut self) -> io::Result<()> {
        self.lock().0.hide_cursor()
    }
    fn show_cursor(&mut self) -> io::Result<()> {
        self.lock().0.show_cursor()
    }
    fn get_cursor_position(&mut self) -> io::Result<Position> {
        self.lock().0.get_cursor_position()
    }
    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> io::Result<()> {
        self.lock().0.set_cursor_position(position)
    }
    fn clear(&mut self) -> io::Result<()> {
        self.lock().0.clear()
    }
    fn clear_region(&mut self, clear_type: ClearType) -> io::Result<()> {
        self.lock().0.clear_region(clear_type)
    }
    fn size(&self) -> io::Result<Size> {
        self.lock().0.size()
    }
    fn window_size(&mut self) -> io::Result<WindowSize> {
        self.lock().0.window_size()
    }
    fn flush(&mut self) -> io::Result<()> {
        let mut inner = self.lock();
        inner.1 += 1;
        inner.0.flush()
    }
}
