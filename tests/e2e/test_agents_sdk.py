"""The OpenAI Agents SDK (Responses API by default) runs an agent with a function tool to
completion against the live server, plainly and streamed."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import API_KEYS, LiveServer

agents = pytest.importorskip("agents")


def weather_agent(server: LiveServer, calls: list[str]):
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}"

    client = AsyncOpenAI(base_url=server.v1, api_key=API_KEYS[0], max_retries=0)
    return agents.Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel("gpt-4", client),
        model_settings=agents.ModelSettings(
            temperature=0, max_tokens=60, tool_choice="required", parallel_tool_calls=False
        ),
        # The tool's answer is the agent's: a 135M model's prose after it proves nothing.
        tool_use_behavior="stop_on_first_tool",
    )


def test_an_agent_calls_its_tool_and_finishes(server: LiveServer):
    calls: list[str] = []
    result = asyncio.run(agents.Runner.run(weather_agent(server, calls), "Weather in Oslo?"))
    assert len(calls) == 1 and calls[0]
    assert result.final_output == f"Sunny in {calls[0]}"


def test_a_streamed_agent_run_finishes(server: LiveServer):
    calls: list[str] = []

    async def run() -> tuple[list[str], object]:
        streamed = agents.Runner.run_streamed(weather_agent(server, calls), "Weather in Rome?")
        kinds = [event.type async for event in streamed.stream_events()]
        return kinds, streamed.final_output

    kinds, final = asyncio.run(run())
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert len(calls) == 1 and final == f"Sunny in {calls[0]}"
