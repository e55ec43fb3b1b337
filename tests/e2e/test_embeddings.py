"""/v1/embeddings through the official openai SDK (its default base64 path and floats),
LangChain, and raw HTTP, on the embedded all-MiniLM-L6-v2 and a llama.cpp GGUF model."""

from __future__ import annotations

import numpy as np
import openai
import pytest

MODEL = "text-embedding-ada-002"  # an alias of all-MiniLM-L6-v2
CAT = "The cat sits on the mat."
SENTENCES = [CAT, "A cat is sitting on a mat.", "Stock markets fell sharply today."]


def vectors(result) -> np.ndarray:
    assert [d.index for d in result.data] == list(range(len(result.data)))
    return np.array([d.embedding for d in result.data], dtype=np.float32)


def test_default_base64_path_equals_floats(client):
    default = client.embeddings.create(model=MODEL, input=SENTENCES)  # the SDK asks for base64
    floats = client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float")
    assert default.object == "list" and default.model == MODEL
    assert vectors(default).shape == (3, 384)
    np.testing.assert_allclose(vectors(default), vectors(floats), atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors(floats), axis=1), 1.0, atol=1e-5)


def test_raw_base64_is_little_endian_float32(http):
    import base64

    body = {"model": MODEL, "input": CAT}
    raw = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    floats = http.post("/v1/embeddings", json={**body, "encoding_format": "float"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, floats["data"][0]["embedding"], atol=1e-6)
    assert raw["data"][0]["object"] == "embedding"


def test_every_input_shape(client, http):
    one = vectors(client.embeddings.create(model=MODEL, input=CAT))
    assert one.shape == (1, 384)
    many = vectors(client.embeddings.create(model=MODEL, input=[CAT, SENTENCES[2]]))
    np.testing.assert_allclose(many[0], one[0], atol=1e-6)
    # Token ids of CAT in the model's own (BERT) vocabulary, with [CLS] and [SEP].
    ids = [101, 1996, 4937, 7719, 2006, 1996, 13523, 1012, 102]
    by_ids = vectors(client.embeddings.create(model=MODEL, input=ids))
    by_id_lists = vectors(client.embeddings.create(model=MODEL, input=[ids, ids]))
    np.testing.assert_allclose(by_ids[0], one[0], atol=1e-5)
    np.testing.assert_allclose(by_id_lists, np.vstack([one, one]), atol=1e-5)


def test_a_batch_gives_what_each_alone_gives(client):
    batch = vectors(client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float"))
    alone = np.vstack(
        [
            vectors(client.embeddings.create(model=MODEL, input=s, encoding_format="float"))
            for s in SENTENCES
        ]
    )
    np.testing.assert_allclose(batch, alone, atol=1e-6)


@pytest.mark.parametrize("model", [MODEL, "smollm2-embed"])
def test_concurrent_requests_get_what_each_gets_alone(client, model):
    """8 requests at once (the model admits them together and its batcher merges them):
    each gets its own vectors, in its own order, as alone (last bits aside, see
    layers/embedding_batcher.py)."""
    from concurrent.futures import ThreadPoolExecutor

    requests = [[f"{s} ({n})" for s in SENTENCES[: 1 + n % 3]] for n in range(8)]

    def embed(texts: list[str]) -> np.ndarray:
        return vectors(client.embeddings.create(model=model, input=texts, encoding_format="float"))

    alone = [embed(texts) for texts in requests]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(embed, requests))
    for mine, own in zip(together, alone, strict=True):
        np.testing.assert_allclose(mine, own, atol=1e-5, rtol=0)


def test_paraphrases_are_closer_than_unrelated_sentences(client):
    cat, paraphrase, markets = vectors(client.embeddings.create(model=MODEL, input=SENTENCES))
    assert cat @ paraphrase > 0.7 > cat @ markets


def test_dimensions_truncate_and_renormalise(client):
    full = vectors(client.embeddings.create(model=MODEL, input=CAT, encoding_format="float"))[0]
    short = vectors(
        client.embeddings.create(model=MODEL, input=CAT, dimensions=64, encoding_format="float")
    )[0]
    assert short.shape == (64,) and abs(np.linalg.norm(short) - 1) < 1e-5
    np.testing.assert_allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, input=CAT, dimensions=385)
    assert caught.value.param == "dimensions"


def test_usage_counts_the_models_tokens(client):
    result = client.embeddings.create(
        model=MODEL, input=["The food was delicious", "hi"], user="u-1"
    )
    # [CLS] the food was delicious [SEP] = 6, [CLS] hi [SEP] = 3
    assert result.usage.prompt_tokens == 9 and result.usage.total_tokens == 9


@pytest.mark.parametrize(
    ("input_", "param"),
    [
        ("", "input"),
        ([CAT, ""], "input[1]"),
        ([], "input"),
        (["x"] * 2049, "input"),
        ([CAT, "word " * 300], "input[1]"),
        ([10**9], "input"),
        ([[2023, 2003], []], "input[1]"),  # "this is", then nothing
        ([[101, 102]], "input"),  # [CLS] [SEP]: special tokens only, no text
    ],
)
def test_bad_inputs_are_400_naming_the_input(client, input_, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, input=input_)
    assert caught.value.param == param


def test_text_and_embedding_models_keep_to_their_endpoints(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="gpt-4", input=CAT)
    assert caught.value.code == "model_not_supported"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])


def test_llama_cpp_gguf_embeddings_are_pooled_and_normalised(client):
    batch = vectors(
        client.embeddings.create(model="smollm2-embed", input=SENTENCES, encoding_format="float")
    )
    assert batch.shape == (3, 576)  # one vector per input, not one per token
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    alone = vectors(
        client.embeddings.create(model="smollm2-embed", input=SENTENCES[2], encoding_format="float")
    )
    np.testing.assert_allclose(batch[2], alone[0], atol=1e-6)
    assert batch[0] @ batch[1] > batch[0] @ batch[2]


def test_langchain_openai_embeddings(server):
    from langchain_openai import OpenAIEmbeddings

    # check_embedding_ctx_length=False: LangChain would otherwise tokenise with tiktoken,
    # which downloads its vocabulary (no network here), and send OpenAI token ids.
    embeddings = OpenAIEmbeddings(
        model=MODEL, base_url=server.v1, api_key="test-key", check_embedding_ctx_length=False
    )
    documents = embeddings.embed_documents(SENTENCES)
    query = embeddings.embed_query(CAT)
    assert len(documents) == 3 and len(query) == 384
    np.testing.assert_allclose(documents[0], query, atol=1e-6)


def test_a_sentence_transformers_directory_model_from_s3(client):
    local = vectors(client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float"))
    from_s3 = vectors(
        client.embeddings.create(model="s3-minilm", input=SENTENCES, encoding_format="float")
    )
    np.testing.assert_allclose(from_s3, local, atol=1e-6)


def test_token_ids_with_no_text_are_a_400(client):
    """Found by fuzzing: special tokens only decode to nothing, and llama.cpp's decode of an
    empty sequence failed with a 500."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="smollm2-embed", input=[0, 1])  # SmolLM2's specials
    assert refused.value.body["param"] == "input"
