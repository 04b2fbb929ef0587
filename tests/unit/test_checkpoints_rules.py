from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime, timedelta, timezone

import orderpally_verify as verifier
import pytest

from orderpally.checkpoints import rules, signing

# RFC 6962's reference leaves and tree heads (transparency-dev/merkle testonly data).
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
REFERENCE_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
REFERENCE_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
REFERENCE_CONSISTENCY = {
    (2, 8): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
REFERENCE_HASHES = [rules.leaf_hash(leaf) for leaf in REFERENCE_LEAVES]
MAX_SIZE = 40
LEAVES = [rules.leaf_hash(i.to_bytes(2, "big")) for i in range(MAX_SIZE + 1)]


# --- RFC 9162's recursive definitions, word for word: what the level-by-level code must equal ---


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return rules.node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    return [*path(m, d[:k]), mth(d[k:])] if m < k else [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], whole: bool) -> list[bytes]:
    if m == len(d):
        return [] if whole else [mth(d)]
    k = _k(len(d))
    return [*subproof(m, d[:k], whole), mth(d[k:])] if m <= k else [*subproof(m - k, d[k:], False), mth(d[:k])]


# --- the tree -------------------------------------------------------------------------------


def test_roots_are_rfc_6962s():
    assert rules.EMPTY_ROOT.hex() == REFERENCE_ROOTS[0]
    for size, expected in enumerate(REFERENCE_ROOTS):
        assert rules.root(REFERENCE_HASHES[:size]).hex() == expected


@pytest.mark.parametrize(("index", "size"), list(REFERENCE_INCLUSION))
def test_inclusion_proofs_are_rfc_6962s(index, size):
    proof = rules.inclusion_proof(REFERENCE_HASHES[:size], index)
    assert [p.hex() for p in proof] == REFERENCE_INCLUSION[index, size]
    root = bytes.fromhex(REFERENCE_ROOTS[size])
    assert verifier.verify_inclusion(REFERENCE_HASHES[index], index, size, proof, root)


@pytest.mark.parametrize(("first", "second"), list(REFERENCE_CONSISTENCY))
def test_consistency_proofs_are_rfc_6962s(first, second):
    proof = rules.consistency_proof(REFERENCE_HASHES[:second], first)
    assert [p.hex() for p in proof] == REFERENCE_CONSISTENCY[first, second]
    old, new = bytes.fromhex(REFERENCE_ROOTS[first]), bytes.fromhex(REFERENCE_ROOTS[second])
    assert verifier.verify_consistency(first, second, old, new, proof)


def test_the_levels_build_the_rfcs_tree_and_proofs():
    for size in range(1, MAX_SIZE + 1):
        tree = LEAVES[:size]
        assert rules.root(tree) == mth(tree)
        assert all(rules.inclusion_proof(tree, i) == path(i, tree) for i in range(size))
        assert all(rules.consistency_proof(tree, m) == subproof(m, tree, True) for m in range(1, size + 1))


def tampered(proof: list[bytes]) -> list[list[bytes]]:
    """The proof with each element in turn changed, then one dropped, then one too many."""
    flipped = [[*proof[:i], bytes([proof[i][0] ^ 1]) + proof[i][1:], *proof[i + 1 :]] for i in range(len(proof))]
    return [*flipped, *([proof[:-1]] if proof else []), [*proof, LEAVES[0]]]


def test_every_inclusion_proof_verifies_and_no_wrong_one_does():
    for size in range(1, MAX_SIZE + 1):
        tree = LEAVES[:size]
        root = rules.root(tree)
        levels = rules.tree_levels(tree)
        for index in range(size):
            proof = rules.inclusion_proof_in(levels, index)
            assert verifier.verify_inclusion(tree[index], index, size, proof, root)
            for bad in tampered(proof):
                assert not verifier.verify_inclusion(tree[index], index, size, bad, root)
            for other in {index - 1, index + 1} - {index}:
                assert not verifier.verify_inclusion(tree[index], other, size, proof, root)
            # A proof for one tree size proves nothing about the tree of another size.
            for other_size in (size - 1, size + 1):
                other_root = rules.root(LEAVES[:other_size])
                assert not verifier.verify_inclusion(tree[index], index, other_size, proof, other_root)
            assert not verifier.verify_inclusion(LEAVES[index + 1], index, size, proof, root)
            assert not verifier.verify_inclusion(tree[index], index, size, proof, rules.leaf_hash(b"other"))


def test_every_consistency_proof_verifies_and_no_wrong_one_does():
    roots = [rules.root(LEAVES[:n]) for n in range(MAX_SIZE + 1)]
    for second in range(1, MAX_SIZE + 1):
        levels = rules.tree_levels(LEAVES[:second])
        for first in range(0, second + 1):
            proof = rules.consistency_proof_in(levels, first)
            assert verifier.verify_consistency(first, second, roots[first], roots[second], proof)
            if first in (0, second):
                continue
            for bad in tampered(proof):
                assert not verifier.verify_consistency(first, second, roots[first], roots[second], bad)
            assert not verifier.verify_consistency(first, second, roots[second], roots[first], proof)
            assert not verifier.verify_consistency(second, first, roots[second], roots[first], proof)
            assert not verifier.verify_consistency(first, second, roots[first], roots[second - 1], proof)
            if first > 1:
                assert not verifier.verify_consistency(first - 1, second, roots[first - 1], roots[second], proof)


def test_a_tree_is_consistent_at_its_own_size_only_with_itself():
    assert verifier.verify_consistency(5, 5, rules.root(LEAVES[:5]), rules.root(LEAVES[:5]), [])
    forked = rules.root([*LEAVES[:4], rules.leaf_hash(b"fork")])
    assert not verifier.verify_consistency(5, 5, rules.root(LEAVES[:5]), forked, [])
    assert not verifier.verify_consistency(0, 5, forked, rules.root(LEAVES[:5]), [])


def test_proofs_of_leaves_or_sizes_outside_the_tree_are_refused():
    with pytest.raises(ValueError, match="not in a tree"):
        rules.inclusion_proof(LEAVES[:3], 3)
    with pytest.raises(ValueError, match="not a prefix"):
        rules.consistency_proof(LEAVES[:3], 4)


def test_a_hundred_thousand_leaves_hash_well_under_a_second():
    leaves = [rules.leaf_hash(i.to_bytes(4, "big")) for i in range(100_000)]
    started = time.perf_counter()
    levels = rules.tree_levels(leaves)
    proofs = [rules.inclusion_proof_in(levels, i) for i in range(0, 100_000, 7)]
    consistency = rules.consistency_proof_in(levels, 77_777)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    root = levels[-1][0]
    assert verifier.verify_inclusion(leaves[700], 700, 100_000, proofs[100], root)
    assert verifier.verify_consistency(77_777, 100_000, rules.root(leaves[:77_777]), root, consistency)


# --- leaves -----------------------------------------------------------------------------------


def test_a_head_leaf_is_canonical_json():
    leaf = rules.head_leaf("帳號-1", 12, "ab" * 32, False)
    assert leaf == ('{"chain_id":"帳號-1","deleted":false,"head_hash":"' + "ab" * 32 + '","seq":12}').encode()
    assert rules.head_leaf("a", 0, "0" * 64, True) != rules.head_leaf("a", 0, "0" * 64, False)


@pytest.mark.parametrize(
    ("chain_id", "seq", "head_hash", "deleted"),
    [
        ("", 1, "a" * 64, False),
        ("a", -1, "a" * 64, False),
        ("a", True, "a" * 64, False),
        ("a", 1, "A" * 64, False),
        ("a", 1, "a" * 63, False),
        ("a", 1, "a" * 64, 0),
    ],
)
def test_a_head_leaf_refuses_what_is_not_a_head(chain_id, seq, head_hash, deleted):
    with pytest.raises(ValueError, match=r"chain|true or false"):
        rules.head_leaf(chain_id, seq, head_hash, deleted)


def test_a_checkpoints_leaves_are_every_head_by_chain_id():
    heads = [rules.ChainHead("b", 2, "b" * 64), rules.ChainHead("a", 1, "a" * 64, deleted=True)]
    assert rules.checkpoint_leaves(heads) == [
        rules.head_leaf("a", 1, "a" * 64, True),
        rules.head_leaf("b", 2, "b" * 64, False),
    ]
    with pytest.raises(ValueError, match="two heads"):
        rules.checkpoint_leaves([*heads, rules.ChainHead("a", 3, "c" * 64)])


# --- the note --------------------------------------------------------------------------------

ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
FULL_WIDTH_42 = "\uff14\uff12"  # digits str.isdigit() takes, and a tree size must not
URL_SAFE_ROOT = base64.urlsafe_b64encode(bytes(range(200, 232))).decode()


def test_a_checkpoint_body_is_a_c2sp_note_and_reads_back():
    body = rules.checkpoint_body("orderpally.example/audit", 42, ROOT, "2026-01-31T09:30:00Z")
    assert body == f"orderpally.example/audit\n42\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\n"
    assert rules.parse_checkpoint_body(body) == rules.Checkpoint(
        "orderpally.example/audit", 42, ROOT, "2026-01-31T09:30:00Z"
    )


def test_issued_at_is_utc_to_the_second():
    taipei = timezone(timedelta(hours=8))
    assert rules.rfc3339_utc(datetime(2026, 2, 1, 1, 30, 0, 500, tzinfo=taipei)) == "2026-01-31T17:30:00Z"
    assert rules.rfc3339_utc(datetime(2026, 2, 1, tzinfo=UTC)) == "2026-02-01T00:00:00Z"


@pytest.mark.parametrize(
    "body",
    [
        f"o\n42\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z",  # no final newline
        f"o\n42\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\n\n",
        f"o\n42\n{ROOT_B64}\n",
        f"o\n42\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\nmore 1\n",
        f"\n42\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\n",
        f" o\n42\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\n",
        f"o\n042\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\n",
        f"o\n-1\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\n",
        f"o\n{FULL_WIDTH_42}\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\n",
        f"o\n{2**63}\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\n",
        f"o\n42\n{ROOT_B64[:-1]}\nissued_at 2026-01-31T09:30:00Z\n",
        f"o\n42\n{base64.b64encode(ROOT[:31]).decode()}\nissued_at 2026-01-31T09:30:00Z\n",
        f"o\n42\n{URL_SAFE_ROOT}\nissued_at 2026-01-31T09:30:00Z\n",
        f"o\n42\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00+00:00\n",
        f"o\n42\n{ROOT_B64}\nissued_at 2026-02-30T09:30:00Z\n",
        f"o\n42\n{ROOT_B64}\nissued_at  2026-01-31T09:30:00Z\n",
        f"o\n42\n{ROOT_B64}\nissued 2026-01-31T09:30:00Z\n",
        f"o\r\n42\n{ROOT_B64}\nissued_at 2026-01-31T09:30:00Z\n",
    ],
)
def test_a_malformed_checkpoint_body_is_refused(body):
    with pytest.raises(ValueError, match=r"checkpoint|tree size|base64|root hash|RFC 3339"):
        rules.parse_checkpoint_body(body)


def test_a_checkpoint_body_is_not_written_from_bad_fields():
    with pytest.raises(ValueError, match="32 bytes"):
        rules.checkpoint_body("o", 1, ROOT[:31], "2026-01-31T09:30:00Z")
    with pytest.raises(ValueError, match="origin"):
        rules.checkpoint_body("o\nx", 1, ROOT, "2026-01-31T09:30:00Z")
    with pytest.raises(ValueError, match="RFC 3339"):
        rules.checkpoint_body("o", 1, ROOT, "2026-01-31 09:30:00")


def test_the_published_json_says_what_the_body_says():
    body = rules.checkpoint_body("o", 3, ROOT, "2026-01-31T09:30:00Z")
    published = rules.checkpoint_json(body, "k1", b"sig")
    assert published == {
        "origin": "o",
        "tree_size": 3,
        "root_hash": ROOT_B64,
        "issued_at": "2026-01-31T09:30:00Z",
        "key_id": "k1",
        "signature": base64.b64encode(b"sig").decode(),
        "body": body,
    }


# --- signing ---------------------------------------------------------------------------------


def test_a_local_signer_signs_what_its_public_key_verifies():
    signer = signing.LocalSigner.generate()
    signature = signer.sign(b"checkpoint")
    assert signing.verify_signature(signer.public_key_pem(), b"checkpoint", signature)
    assert not signing.verify_signature(signer.public_key_pem(), b"checkpoinT", signature)
    flipped = signature[:-1] + bytes([signature[-1] ^ 1])
    assert not signing.verify_signature(signer.public_key_pem(), b"checkpoint", flipped)
    other = signing.LocalSigner.generate()
    assert not signing.verify_signature(other.public_key_pem(), b"checkpoint", signature)
    assert not signing.verify_signature(b"not a key", b"checkpoint", signature)


def test_a_local_signer_reloads_from_its_pem_with_the_same_key_id():
    signer = signing.LocalSigner.generate()
    again = signing.LocalSigner(signer.private_key_pem)
    assert again.key_id == signer.key_id == signing.key_fingerprint(signer.public_key_pem())
    assert len(signer.key_id) == 16
    assert signing.verify_signature(signer.public_key_pem(), b"m", again.sign(b"m"))


def test_a_local_signer_refuses_a_key_of_another_curve():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError, match="P-256"):
        signing.LocalSigner(pem)


class FakeResponse:
    def __init__(self, body: dict) -> None:
        self.body = body

    def json(self) -> dict:
        return self.body

    def raise_for_status(self) -> None:
        return None


class FakeKms:
    """Cloud KMS's asymmetricSign and getPublicKey over a local key, as AuthorizedSession would call them."""

    def __init__(self, signer: signing.LocalSigner, algorithm: str = "EC_SIGN_P256_SHA256") -> None:
        self.signer, self.algorithm, self.calls = signer, algorithm, []
        self.wrong_key: signing.LocalSigner | None = None

    def post(self, url: str, json: dict) -> FakeResponse:
        self.calls.append(("POST", url, json))
        digest = base64.b64decode(json["digest"]["sha256"])
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, utils

        key = (self.wrong_key or self.signer)._key
        signature = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return FakeResponse({"signature": base64.b64encode(signature).decode(), "name": url})

    def get(self, url: str) -> FakeResponse:
        self.calls.append(("GET", url, None))
        return FakeResponse({"pem": self.signer.public_key_pem().decode(), "algorithm": self.algorithm})


VERSION = "projects/p/locations/asia-east1/keyRings/r/cryptoKeys/checkpoints/cryptoKeyVersions/1"


def test_the_kms_signer_sends_the_digest_and_returns_kms_signature():
    local = signing.LocalSigner.generate()
    kms = FakeKms(local)
    signer = signing.KmsSigner(VERSION, kms)
    signature = signer.sign(b"checkpoint body")
    assert signing.verify_signature(local.public_key_pem(), b"checkpoint body", signature)
    digest = base64.b64encode(hashlib.sha256(b"checkpoint body").digest()).decode()
    assert kms.calls[0] == (
        "POST",
        f"https://cloudkms.googleapis.com/v1/{VERSION}:asymmetricSign",
        {"digest": {"sha256": digest}},
    )
    assert ("GET", f"https://cloudkms.googleapis.com/v1/{VERSION}/publicKey", None) in kms.calls
    assert signer.public_key_pem() == local.public_key_pem()
    assert signer.key_id == local.key_id
    assert sum(1 for call in kms.calls if call[0] == "GET") == 1  # the public key is fetched once


def test_the_kms_signer_refuses_a_signature_its_key_does_not_verify():
    kms = FakeKms(signing.LocalSigner.generate())
    kms.wrong_key = signing.LocalSigner.generate()
    with pytest.raises(ValueError, match="rejects"):
        signing.KmsSigner(VERSION, kms).sign(b"m")


def test_the_kms_signer_refuses_a_key_of_another_algorithm():
    kms = FakeKms(signing.LocalSigner.generate(), algorithm="RSA_SIGN_PSS_2048_SHA256")
    with pytest.raises(ValueError, match="not EC_SIGN_P256_SHA256"):
        signing.KmsSigner(VERSION, kms).public_key_pem()
