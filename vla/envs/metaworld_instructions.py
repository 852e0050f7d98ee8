"""Language instructions for the 50 Meta-World tasks.

Each task has three training phrasings (used when recording and for in-distribution evaluation) and
two held-out phrasings that never appear in recorded data: evaluating with ``phrasing="heldout"``
measures whether a policy follows the meaning of an instruction rather than its exact words.
"""

from __future__ import annotations

import numpy as np

from vla.envs.metaworld_tasks import canonical_task

PHRASINGS = ("train", "heldout")
# Every character an instruction may use (the observation space's Text charset).
INSTRUCTION_CHARSET = " -'abcdefghijklmnopqrstuvwxyz"

# task (without version suffix) -> (training phrasings, held-out phrasings)
_INSTRUCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "assembly": (
        ("pick up the nut and place it onto the peg", "put the ring nut on the peg", "assemble the nut onto the peg"),
        ("slide the nut down over the peg", "fit the ring onto the upright peg"),
    ),
    "basketball": (
        ("dunk the basketball into the basket", "put the ball in the hoop", "pick up the ball and score a basket"),
        ("drop the ball through the hoop", "shoot the ball into the net"),
    ),
    "bin-picking": (
        ("move the puck from one bin to the other", "pick the puck out of the bin and drop it in the other bin", "transfer the puck between the bins"),
        ("carry the puck over to the second bin", "relocate the puck into the empty bin"),
    ),
    "box-close": (
        ("close the box with its lid", "put the lid on the box", "grasp the cover and close the box"),
        ("place the cover onto the box", "shut the box by placing its lid"),
    ),
    "button-press": (
        ("press the button", "push the button in", "push the button from the front"),
        ("hit the button straight on", "poke the button with the gripper"),
    ),
    "button-press-topdown": (
        ("press the button from the top", "push the button down", "press down on the button"),
        ("hit the button from above", "push the top button downward"),
    ),
    "button-press-topdown-wall": (
        ("press the button from the top past the wall", "push the button down behind the wall", "reach over the wall and press the button down"),
        ("get around the wall and hit the button from above", "press down the button that sits behind a wall"),
    ),
    "button-press-wall": (
        ("press the button behind the wall", "go around the wall and push the button", "push the button past the wall"),
        ("avoid the wall and hit the button", "reach the button beyond the wall and press it"),
    ),
    "coffee-button": (
        ("press the button on the coffee machine", "push the coffee machine's button", "start the coffee machine"),
        ("hit the switch on the coffee maker", "turn on the coffee maker with its button"),
    ),
    "coffee-pull": (
        ("pull the mug away from the coffee machine", "take the mug out from under the coffee machine", "drag the mug out of the coffee machine"),
        ("slide the cup away from the coffee maker", "remove the cup from beneath the coffee maker"),
    ),
    "coffee-push": (
        ("push the mug under the coffee machine", "slide the mug beneath the coffee machine", "move the mug under the coffee spout"),
        ("place the cup below the coffee maker by pushing it", "shove the cup under the coffee maker"),
    ),
    "dial-turn": (
        ("turn the dial", "rotate the dial half a turn", "spin the dial around"),
        ("twist the knob", "turn the knob one hundred eighty degrees"),
    ),
    "disassemble": (
        ("take the nut off the peg", "pick the nut out of the peg", "lift the ring nut off the peg"),
        ("remove the ring from the upright peg", "pull the nut up and away from the peg"),
    ),
    "door-close": (
        ("close the door", "push the door shut", "swing the door closed"),
        ("shut the open door", "move the door until it is closed"),
    ),
    "door-lock": (
        ("lock the door", "turn the lock to lock the door", "rotate the door lock down"),
        ("secure the door by turning its lock", "twist the lock on the door to locked"),
    ),
    "door-open": (
        ("open the door", "pull the door open", "swing the door open by its handle"),
        ("open up the door", "grab the handle and open the door"),
    ),
    "door-unlock": (
        ("unlock the door", "turn the lock to unlock the door", "rotate the door lock up"),
        ("release the lock on the door", "twist the door lock to unlocked"),
    ),
    "drawer-close": (
        ("close the drawer", "push the drawer shut", "slide the drawer closed"),
        ("shut the open drawer", "push the drawer all the way in"),
    ),
    "drawer-open": (
        ("open the drawer", "pull the drawer open", "slide the drawer out"),
        ("pull out the drawer", "open up the drawer by its handle"),
    ),
    "faucet-close": (
        ("turn the faucet off", "rotate the faucet clockwise", "close the faucet"),
        ("shut off the tap", "twist the tap handle closed"),
    ),
    "faucet-open": (
        ("turn the faucet on", "rotate the faucet counter-clockwise", "open the faucet"),
        ("turn on the tap", "twist the tap handle open"),
    ),
    "hammer": (
        ("hammer the nail into the wall", "pick up the hammer and hit the nail", "drive the nail in with the hammer"),
        ("use the hammer to knock in the nail", "strike the nail with the hammer"),
    ),
    "hand-insert": (
        ("insert the gripper into the hole", "put the hand into the hole", "reach into the hole in the table"),
        ("stick the gripper down into the hole", "place the hand inside the hole"),
    ),
    "handle-press": (
        ("press the handle down", "push the handle downward", "push down on the handle"),
        ("lower the handle", "press down the lever handle"),
    ),
    "handle-press-side": (
        ("press the handle down from the side", "push the side handle down", "push down the handle sideways"),
        ("lower the handle from its side", "press the sideways handle downward"),
    ),
    "handle-pull": (
        ("pull the handle up", "lift the handle", "raise the handle"),
        ("pull up on the handle", "bring the handle upward"),
    ),
    "handle-pull-side": (
        ("pull the handle up from the side", "lift the side handle", "raise the handle sideways"),
        ("pull up the sideways handle", "bring the side handle upward"),
    ),
    "lever-pull": (
        ("pull the lever up", "raise the lever", "lift the lever"),
        ("pull up on the lever", "flip the lever upward"),
    ),
    "peg-insert-side": (
        ("insert the peg into the hole from the side", "push the peg sideways into the hole", "put the peg in the side hole"),
        ("slide the peg into the opening", "fit the peg into the hole in the box"),
    ),
    "peg-unplug-side": (
        ("unplug the peg from the side", "pull the peg out of the hole", "remove the peg sideways"),
        ("slide the peg out of its socket", "extract the peg from the hole"),
    ),
    "pick-out-of-hole": (
        ("pick the object out of the hole", "lift the peg out of the hole", "take the object up out of the hole"),
        ("pull the item up from the hole", "grab what is in the hole and lift it out"),
    ),
    "pick-place": (
        ("pick up the puck and place it at the goal", "put the puck on the target", "move the puck to the goal position"),
        ("grab the puck and set it down at the target", "carry the puck over to the goal"),
    ),
    "pick-place-wall": (
        ("pick up the puck and place it at the goal past the wall", "lift the puck over the wall to the target", "move the puck over the wall to the goal"),
        ("carry the puck across the wall and set it at the target", "bring the puck to the goal behind the wall"),
    ),
    "plate-slide": (
        ("slide the plate into the cabinet", "push the plate into the cabinet", "move the plate into the cabinet"),
        ("shove the plate into the cabinet opening", "put the plate in the cabinet by sliding it"),
    ),
    "plate-slide-back": (
        ("slide the plate out of the cabinet", "pull the plate back out of the cabinet", "get the plate out of the cabinet"),
        ("draw the plate back from the cabinet", "retrieve the plate from the cabinet by sliding it"),
    ),
    "plate-slide-back-side": (
        ("slide the plate out of the cabinet sideways", "pull the plate out of the side of the cabinet", "get the plate out of the cabinet from the side"),
        ("draw the plate back out sideways", "retrieve the plate sideways from the cabinet"),
    ),
    "plate-slide-side": (
        ("slide the plate into the cabinet sideways", "push the plate into the cabinet from the side", "move the plate sideways into the cabinet"),
        ("shove the plate sideways into the cabinet", "put the plate in the cabinet with a sideways push"),
    ),
    "push": (
        ("push the puck to the goal", "slide the puck to the target", "push the puck to the target position"),
        ("nudge the puck over to the goal", "shove the puck onto the target"),
    ),
    "push-back": (
        ("push the puck back to the goal", "slide the puck backwards to the target", "pull the puck back to the goal"),
        ("move the puck back onto the target", "bring the puck back to the goal by sliding it"),
    ),
    "push-wall": (
        ("push the puck to the goal past the wall", "slide the puck around the wall to the target", "push the puck around the wall"),
        ("shove the puck past the wall onto the goal", "nudge the puck around the wall to the target"),
    ),
    "reach": (
        ("reach the goal position", "move the gripper to the target", "reach for the goal"),
        ("bring the hand to the target point", "put the gripper at the goal location"),
    ),
    "reach-wall": (
        ("reach the goal past the wall", "move the gripper to the target behind the wall", "reach over the wall to the goal"),
        ("bring the hand to the target beyond the wall", "get the gripper to the goal around the wall"),
    ),
    "shelf-place": (
        ("place the puck on the shelf", "put the puck onto the shelf", "pick up the puck and set it on the shelf"),
        ("lift the puck up onto the shelf", "store the puck on the shelf"),
    ),
    "soccer": (
        ("kick the ball into the goal", "push the soccer ball into the net", "score a goal with the ball"),
        ("shove the ball into the goal", "get the ball into the net"),
    ),
    "stick-pull": (
        ("pull the bottle with the stick", "use the stick to pull the container", "grab the stick and drag the bottle with it"),
        ("hook the container with the stick and pull it", "drag the bottle closer using the stick"),
    ),
    "stick-push": (
        ("push the bottle with the stick", "use the stick to push the container", "grab the stick and push the bottle with it"),
        ("shove the container along with the stick", "move the bottle away using the stick"),
    ),
    "sweep": (
        ("sweep the puck off the table", "push the puck off the table edge", "sweep the puck off the side"),
        ("brush the puck off the table", "shove the puck over the table edge"),
    ),
    "sweep-into": (
        ("sweep the puck into the hole", "push the puck into the hole", "slide the puck into the hole"),
        ("brush the puck into the opening", "get the puck into the hole by sweeping it"),
    ),
    "window-close": (
        ("close the window", "slide the window shut", "push the window closed"),
        ("shut the open window", "slide the window pane closed"),
    ),
    "window-open": (
        ("open the window", "slide the window open", "push the window open"),
        ("slide the window pane open", "open up the window"),
    ),
}  # fmt: skip


def instructions(task: str, phrasing: str = "train") -> tuple[str, ...]:
    """The phrasings of ``task`` for ``phrasing`` (``train`` or ``heldout``)."""
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {PHRASINGS}, got {phrasing!r}")
    train, heldout = _INSTRUCTIONS[canonical_task(task).removesuffix("-v3")]
    return train if phrasing == "train" else heldout


def choose_instruction(task: str, phrasing: str, rng: np.random.Generator) -> str:
    """One phrasing of ``task`` drawn with ``rng`` (so a seeded episode always reads the same words)."""
    options = instructions(task, phrasing)
    return options[int(rng.integers(len(options)))]
