// Self-generated music for the demo and the music-sync tests: PCM WAV files synthesised here
// (chords, an arpeggio and a metronome click, so that two devices out of sync are audible as a
// flam). No samples, no downloads; the output is ours, dedicated to the public domain (CC0).

import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * @typedef {object} TrackSpec
 * @property {string} file      file name, e.g. `p3-demo-chords.wav`
 * @property {number} seconds   duration, s
 * @property {number} bpm       tempo, beats per minute
 * @property {number[][]} chords chord progression, MIDI note numbers; one chord per bar (4 beats)
 * @property {'pad' | 'arpeggio'} style
 * @property {number} [rate]    sample rate, Hz (default 22050)
 */

/** The demo's tracks (`npm start` writes them into media/ when missing). */
export const DEMO_TRACKS = [
  {
    file: 'p3-demo-chords.wav',
    seconds: 96,
    bpm: 100,
    // C - G - Am - F
    chords: [[60, 64, 67], [55, 59, 62], [57, 60, 64], [53, 57, 60]],
    style: 'pad',
  },
  {
    file: 'p3-demo-arpeggio.wav',
    seconds: 64,
    bpm: 120,
    // Dm - Bb - F - C
    chords: [[62, 65, 69], [58, 62, 65], [53, 57, 60], [60, 64, 67]],
    style: 'arpeggio',
  },
];

/**
 * Write `tracks` into `dir` (created if needed), skipping files that already exist with the
 * right size. Returns the paths.
 * @param {string} dir
 * @param {TrackSpec[]} [tracks]
 * @returns {string[]}
 */
export function writeTracks(dir, tracks = DEMO_TRACKS) {
  mkdirSync(dir, { recursive: true });
  return tracks.map((spec) => {
    const path = join(dir, spec.file);
    const rate = spec.rate ?? 22050;
    const bytes = 44 + Math.round(spec.seconds * rate) * 2;
    if (!existsSync(path) || statSync(path).size !== bytes) writeFileSync(path, synthesize(spec));
    return path;
  });
}

/**
 * One track as a 16-bit mono PCM WAV file.
 * @param {TrackSpec} spec
 * @returns {Buffer}
 */
export function synthesize(spec) {
  const rate = spec.rate ?? 22050;
  const n = Math.round(spec.seconds * rate);
  const out = Buffer.alloc(44 + n * 2);
  writeHeader(out, rate, n);
  const pcm = new Int16Array(n);
  const beat = 60 / spec.bpm;
  const bar = 4 * beat;
  const freq = (note) => 440 * 2 ** ((note - 69) / 12);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const b = Math.floor(t / beat);
    const inBeat = t - b * beat;
    const chord = spec.chords[Math.floor(t / bar) % spec.chords.length];
    let s = 0;
    if (spec.style === 'pad') {
      // The chord, with a slow swell per bar.
      const inBar = (t % bar) / bar;
      const env = 0.6 + 0.4 * Math.sin(Math.PI * inBar);
      for (const note of chord) s += 0.12 * env * Math.sin(2 * Math.PI * freq(note) * t);
      // Bass on the root, an octave down.
      s += 0.1 * Math.sin(2 * Math.PI * freq(chord[0] - 12) * t);
    } else {
      // One chord note per half beat, plucked.
      const half = beat / 2;
      const k = Math.floor(t / half);
      const note = chord[k % chord.length] + (k % 6 >= 3 ? 12 : 0);
      const since = t - k * half;
      s += 0.3 * Math.exp(-since * 6) * Math.sin(2 * Math.PI * freq(note) * t);
      s += 0.08 * Math.sin(2 * Math.PI * freq(chord[0] - 12) * t);
    }
    // Metronome: a short high click on every beat, louder on the bar.
    if (inBeat < 0.012) {
      const accent = b % 4 === 0 ? 0.45 : 0.25;
      s += accent * Math.exp(-inBeat * 400) * Math.sin(2 * Math.PI * (b % 4 === 0 ? 2000 : 1500) * t);
    }
    // Fade in and out over 20 ms so the ends do not click.
    const edge = Math.min(1, t / 0.02, (spec.seconds - t) / 0.02);
    pcm[i] = Math.round(Math.max(-1, Math.min(1, s * edge)) * 32767);
  }
  // WAV is little-endian, as are the machines we run on (checked, not assumed).
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  if (le) Buffer.from(pcm.buffer).copy(out, 44);
  else for (let i = 0; i < n; i++) out.writeInt16LE(pcm[i], 44 + i * 2);
  return out;
}

/**
 * The 44-byte RIFF/WAVE header of 16-bit mono PCM with `samples` samples.
 * @param {Buffer} b
 * @param {number} rate
 * @param {number} samples
 */
function writeHeader(b, rate, samples) {
  b.write('RIFF', 0);
  b.writeUInt32LE(36 + samples * 2, 4);
  b.write('WAVE', 8);
  b.write('fmt ', 12);
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // mono
  b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate * 2, 28); // byte rate
  b.writeUInt16LE(2, 32); // block align
  b.writeUInt16LE(16, 34); // bits per sample
  b.write('data', 36);
  b.writeUInt32LE(samples * 2, 40);
}
