#!/bin/sh
echo "$GREETING"
cat /app/data/message.txt
echo "state: $(cat /app/state), user: $(id -un)"
