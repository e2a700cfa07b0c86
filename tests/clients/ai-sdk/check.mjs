// The Vercel AI SDK against a letta-hayhooks server, with the OpenAI provider's default model (the Responses API).
// Env: LETTA_HAYHOOKS_V1 (the server's /v1 URL), LETTA_HAYHOOKS_MODEL (an agent name), LETTA_HAYHOOKS_API_KEY
// (optional). Prints one JSON object: each flow's result, or its error with the server's answer, and the requests
// the SDK sent (the fetch is the global one, only recorded on the way).
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const baseURL = process.env.LETTA_HAYHOOKS_V1;
const model = process.env.LETTA_HAYHOOKS_MODEL;
if (!baseURL || !model) {
  console.error("set LETTA_HAYHOOKS_V1 and LETTA_HAYHOOKS_MODEL");
  process.exit(2);
}

let requests = [];
let streamError; // streamText reports errors through onError, then throws a generic "No output generated"
const onError = ({ error }) => {
  streamError = error;
};
const recordingFetch = async (url, init) => {
  let body = init?.body;
  try {
    body = JSON.parse(body);
  } catch {
    // not JSON: keep it as it is
  }
  requests.push({ method: init?.method ?? "GET", url: String(url), body });
  return fetch(url, init);
};

const openai = createOpenAI({ baseURL, apiKey: process.env.LETTA_HAYHOOKS_API_KEY || "unused", fetch: recordingFetch });

// no retries: a failed request fails the flow (the SDK retries twice by default, which would hide a flaky answer)
const common = { model: openai(model), maxRetries: 0 };

const weatherTool = tool({
  description: "Current weather in a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `Sunny in ${city}, 21C`,
});

function stepSummary(step) {
  return {
    text: step.text,
    finishReason: step.finishReason,
    toolCalls: step.toolCalls.map((c) => ({ toolName: c.toolName, input: c.input, toolCallId: c.toolCallId })),
    toolResults: step.toolResults.map((r) => ({ toolName: r.toolName, output: r.output })),
  };
}

const flows = {
  // one turn, no stream
  async text() {
    const result = await generateText({ ...common, prompt: "hello from the ai sdk" });
    return { text: result.text, finishReason: result.finishReason, responseId: result.response.id,
             usage: result.usage };
  },

  // one turn, streamed: the text arrives in several parts
  async stream() {
    const result = streamText({ ...common, prompt: "stream this please", onError });
    const parts = [];
    for await (const part of result.textStream) parts.push(part);
    return { parts, text: await result.text, finishReason: await result.finishReason };
  },

  // a tool the SDK runs itself: step 1 is the model's call, step 2 the answer with the tool's result
  async tool() {
    const result = await generateText({
      ...common,
      tools: { get_weather: weatherTool },
      stopWhen: stepCountIs(3),
      prompt: 'CALL get_weather {"city": "Paris"}',
    });
    return { text: result.text, finishReason: result.finishReason, steps: result.steps.map(stepSummary) };
  },

  // the same, streamed
  async streamTool() {
    const result = streamText({
      ...common,
      tools: { get_weather: weatherTool },
      stopWhen: stepCountIs(3),
      prompt: 'CALL get_weather {"city": "Oslo"}',
      onError,
    });
    const parts = [];
    for await (const part of result.textStream) parts.push(part);
    const steps = await result.steps;
    return { parts, text: await result.text, steps: steps.map(stepSummary) };
  },

  // a second turn carrying the first one's messages (the SDK sends the stored answer as an item_reference)
  async followUp() {
    const first = await generateText({ ...common, prompt: "remember FOLLOW-MARK" });
    const second = await generateText({
      ...common,
      messages: [
        { role: "user", content: "remember FOLLOW-MARK" },
        ...first.response.messages,
        { role: "user", content: "RECALL?FOLLOW-MARK" },
      ],
    });
    return { first: first.text, second: second.text };
  },
};

const selected = (process.env.FLOWS || Object.keys(flows).join(",")).split(",");
const out = {};
for (const name of selected) {
  requests = [];
  streamError = undefined;
  try {
    out[name] = { ok: true, result: await flows[name]() };
  } catch (thrown) {
    const error = streamError ?? thrown;
    out[name] = {
      ok: false,
      error: String(error?.message ?? error),
      statusCode: error?.statusCode,
      responseBody: error?.responseBody,
      cause: error?.cause ? String(error.cause?.message ?? error.cause) : undefined,
    };
  }
  out[name].requests = requests;
}
console.log(JSON.stringify(out));
