//! The control socket: how admin commands reach a running server.
//!
//! redb lets one process open a database file. While `inlet serve` runs it holds the file and
//! listens on `<data dir>/inlet.sock` (owner-only, inside the owner-only data dir). An admin
//! command first tries that socket; when nobody answers it opens the database itself.
//!
//! Protocol: the client sends one JSON [`Op`] line. The server answers with frames of
//! `kind (1 byte) · length (u32 BE) · bytes`: `o` = output for stdout, then exactly one of
//! `k` (done) or `e` (failed, the bytes are the message).

use crate::ops::{Exec, Op, execute};
use crate::server::State;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SOCKET_FILE: &str = "inlet.sock";
/// Longest request line accepted on the socket.
const MAX_REQUEST: u64 = 1 << 20;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Binds the control socket, owner-only (replacing a stale one: the caller holds the
/// database, so no other server can be using it) and serves it on a background thread.
pub fn serve(data_dir: &Path, state: Arc<State>) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    // Bound under a temporary name and made owner-only before it is renamed into place:
    // `bind` makes it as the umask allows (0777 with umask 000), and a client must never
    // find it so, even for a moment.
    // No longer than SOCKET_FILE (a socket's path is limited to 107 bytes); one name is
    // enough, as only the process holding the database binds here.
    let staged = data_dir.join(".sock.tmp");
    let _ = std::fs::remove_file(&staged);
    let listener = UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staged, &path)?;
    // Weak: a stopping server must be able to drop the last reference and close the file.
    let state = Arc::downgrade(&state);
    std::thread::Builder::new()
        .name("inlet-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let Some(state) = state.upgrade() else { break };
                let _ = std::thread::Builder::new()
                    .name("inlet-control-conn".into())
                    .spawn(move || {
                        if let Err(e) = handle(conn, &state) {
                            tracing::debug!(error = %e, "control connection ended");
                        }
                    });
            }
        })?;
    Ok(path)
}

fn handle(conn: UnixStream, state: &State) -> io::Result<()> {
    let mut line = String::new();
    BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line)?;
    let mut frames = Frames(BufWriter::new(&conn));
    let result = match serde_json::from_str::<Op>(&line) {
        Ok(mut op) => {
            tracing::info!(op = %op_name(&op), "admin command");
            // The serving process's own configuration decides the default retention.
            if let Op::RetentionRun { default_days, .. } = &mut op {
                *default_days = state.config.retention_days;
            }
            // watch: an alert test trusts this process's webhook CA.
            if let Op::AlertsTest { webhook_ca, .. } = &mut op {
                webhook_ca.clone_from(&state.config.webhook_ca);
            }
            // Quarantine: a replay goes through this server's ingest pipeline.
            if let Op::Quarantine {
                action: crate::ops::QuarantineAction::Replay,
                app,
                reason,
                ids,
                json,
            } = op
            {
                return finish(frames, replay(state, &app, reason, ids, json));
            }
            execute(
                &Exec::Server(
                    &state.store,
                    &state.writer,
                    state.indexer.as_ref().map(|i| i.identity()),
                    state.cluster.as_deref(),
                ),
                op,
                &mut frames,
            )
            .map(|()| Vec::new())
            .map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("bad control request: {e}")),
    };
    finish(frames, result)
}

fn finish<W: Write>(frames: Frames<W>, result: Result<Vec<u8>, String>) -> io::Result<()> {
    let mut w = frames.0;
    match result {
        Ok(out) => {
            if !out.is_empty() {
                frame(&mut w, b'o', &out)?;
            }
            frame(&mut w, b'k', b"")?
        }
        Err(msg) => frame(&mut w, b'e', msg.as_bytes())?,
    }
    w.flush()
}

/// `inlet quarantine replay` on this server: the replay on a runtime of its own (this is a
/// control thread), its results as JSON or one line per event.
fn replay(
    state: &State,
    app: &str,
    reason: Option<String>,
    ids: Vec<String>,
    json: bool,
) -> Result<Vec<u8>, String> {
    if reason.is_none() && ids.is_empty() {
        return Err("give --reason or --id".into());
    }
    let sel = crate::store::quarantine::Selection { reason, ids };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let results = rt
        .block_on(crate::quarantine::replay(state, app, &sel))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    if json {
        out = crate::quarantine::replay_json(&results)
            .to_string()
            .into_bytes();
        out.push(b'\n');
        return Ok(out);
    }
    for r in &results {
        let _ = writeln!(
            out,
            "{} {}{}{}",
            r.event_id,
            r.outcome,
            r.reason
                .as_deref()
                .map(|x| format!(" {x}"))
                .unwrap_or_default(),
            if r.released { "" } else { " (still held)" }
        );
    }
    let held = results.iter().filter(|r| !r.released).count();
    let _ = writeln!(
        out,
        "app {app}: {} replayed, {} left the quarantine, {held} still held",
        results.len(),
        results.len() - held
    );
    Ok(out)
}

fn op_name(op: &Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

/// A writer that sends everything as `o` frames.
struct Frames<W: Write>(W);

impl<W: Write> Write for Frames<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(u32::MAX as usize);
        frame(&mut self.0, b'o', &buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn frame(w: &mut impl Write, kind: u8, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&[kind])?;
    w.write_all(&(bytes.len() as u32).to_be_bytes())?;
    w.write_all(bytes)
}

/// Connects to a running server's control socket, if one answers.
pub fn connect(data_dir: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket_path(data_dir)).ok()
}

/// Sends `op` to a running server, copying its output to `out`. `Err` holds the server's
/// message when the operation failed.
pub fn call(conn: UnixStream, op: &Op, out: &mut dyn Write) -> Result<(), String> {
    let mut request = serde_json::to_vec(op).map_err(|e| e.to_string())?;
    request.push(b'\n');
    (&conn).write_all(&request).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(&conn);
    let mut buf = Vec::new();
    loop {
        let mut head = [0u8; 5];
        r.read_exact(&mut head)
            .map_err(|e| format!("the server closed the control connection: {e}"))?;
        let len = u32::from_be_bytes(head[1..].try_into().expect("4 bytes")) as usize;
        buf.resize(len, 0);
        r.read_exact(&mut buf).map_err(|e| e.to_string())?;
        match head[0] {
            b'o' => out.write_all(&buf).map_err(|e| e.to_string())?,
            b'k' => return out.flush().map_err(|e| e.to_string()),
            b'e' => return Err(String::from_utf8_lossy(&buf).into_owned()),
            other => return Err(format!("unexpected control frame {other}")),
        }
    }
}
