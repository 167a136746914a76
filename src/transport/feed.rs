//! Feeding a watched command's stdin (see [`super::wrap::wrap_watched`]), for both transports:
//! the input is written, then stdin is held open until the command's outcome is known. End of
//! file on it tells the command's watchdog that nexus is gone (killed, or the command abandoned),
//! and the watchdog kills everything the command started.

use tokio::io::AsyncWriteExt;

/// Writes `input`, then holds `writer` open until aborted.
async fn feed_and_hold(mut writer: impl tokio::io::AsyncWrite + Unpin, input: Vec<u8>) {
    // The command may exit without reading its stdin; that is its business.
    let _ = writer.write_all(&input).await;
    let _ = writer.flush().await;
    // Written: the transport has its own copy. A write batch's script is hundreds of KiB, and
    // the wait below lasts as long as the command.
    drop(input);
    std::future::pending::<()>().await;
}

/// A task feeding a command's stdin; dropping it closes that stdin.
pub(crate) struct Feeder(tokio::task::JoinHandle<()>);

impl Feeder {
    /// Starts writing `input` to `writer` and holding it open (on the current runtime).
    pub(crate) fn start(
        writer: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
        input: Vec<u8>,
    ) -> Feeder {
        Feeder(tokio::spawn(feed_and_hold(writer, input)))
    }

    /// A feeder for a command whose stdin is written elsewhere (nothing to hold).
    pub(crate) fn wrap(task: tokio::task::JoinHandle<()>) -> Feeder {
        Feeder(task)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.0.abort();
    }
}
