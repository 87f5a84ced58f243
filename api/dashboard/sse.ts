/**
 * Server-Sent Events framing, shared by the TypeScript client and the dashboard (served
 * to the browser as /dashboard/sse.js, so it imports nothing).
 */
export interface SseMessage {
  event: string;
  data: string;
}

/** Splits complete messages off the front of `buffer`; `rest` is the unfinished tail. */
export function takeSseMessages(buffer: string): { messages: SseMessage[]; rest: string } {
  const messages: SseMessage[] = [];
  let end;
  while ((end = buffer.indexOf('\n\n')) >= 0) {
    const message = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    const event = /^event: (.*)$/m.exec(message)?.[1];
    const data = /^data: (.*)$/m.exec(message)?.[1];
    if (event !== undefined && data !== undefined) messages.push({ event, data });
  }
  return { messages, rest: buffer };
}
