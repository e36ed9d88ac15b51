/** Progress bars (cli-progress) for long stages, or silence (tests, non-TTY logs). */
import cliProgress from "cli-progress";

export interface Progress {
  start(label: string, total: number, done?: number): void;
  update(done: number, info?: string): void;
  stop(): void;
  log(line: string): void;
}

export const silentProgress: Progress = { start() {}, update() {}, stop() {}, log() {} };

export function consoleProgress(stream: NodeJS.WriteStream = process.stderr): Progress {
  let bar: cliProgress.SingleBar | undefined;
  const tty = Boolean(stream.isTTY);
  let label = "";
  let total = 0;
  let lastPrinted = -1;
  return {
    start(l, t, done = 0) {
      label = l;
      total = t;
      lastPrinted = -1;
      if (tty) {
        bar = new cliProgress.SingleBar(
          { format: `${l.padEnd(10)} [{bar}] {value}/{total} {duration_formatted} (eta {eta_formatted}) {info}`, stream, hideCursor: true, clearOnComplete: false, etaBuffer: 20 },
          cliProgress.Presets.shades_classic,
        );
        bar.start(t, done, { info: "" });
      } else stream.write(`${l}: 0/${t}\n`);
    },
    update(done, info = "") {
      if (bar) bar.update(done, { info });
      else {
        const pct = total ? Math.floor((10 * done) / total) : 10;
        if (pct !== lastPrinted) {
          lastPrinted = pct;
          stream.write(`${label}: ${done}/${total} ${info}\n`);
        }
      }
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
    log(line) {
      if (bar) bar.stop();
      stream.write(line + "\n");
      bar = undefined;
    },
  };
}
