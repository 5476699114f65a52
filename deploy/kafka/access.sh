#!/bin/bash
# The compose `kafka-access` job: one SCRAM user per service, per agency, for finance and
# for operators (password from KAFKA_PASSWORD_<USER>, e.g. KAFKA_PASSWORD_AGENCY_DISHUB),
# each agency's reply topic, and the ACLs of deploy/kafka/acls.txt (generated from
# perlinsos_shared.access). Run again after a password changes: it sets them anew.
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD}"
bin=/opt/kafka/bin
server=kafka:9092
admin=/tmp/admin.properties
umask 077
cat > "$admin" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
PROPERTIES
acls=/opt/perlinsos/acls.txt
for user in $(grep -o 'User:[a-z0-9-]*' "$acls" | cut -d: -f2 | sort -u); do
  var="KAFKA_PASSWORD_$(echo "$user" | tr 'a-z-' 'A-Z_')"
  password="${!var:?set $var}"
  "$bin/kafka-configs.sh" --bootstrap-server "$server" --command-config "$admin" --alter \
    --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=${password}]"
done
for topic in $(grep -o 'registry\.intake-rejected\.[A-Za-z0-9_-]*\.v2' "$acls" | sort -u); do
  "$bin/kafka-topics.sh" --bootstrap-server "$server" --command-config "$admin" \
    --create --if-not-exists --topic "$topic" --partitions 1 --replication-factor 1
done
grep -v '^#' "$acls" | while read -r line; do
  # shellcheck disable=SC2086  # one rule's arguments, split on purpose
  "$bin/kafka-acls.sh" --bootstrap-server "$server" --command-config "$admin" $line > /dev/null
done
echo "kafka users, agency reply topics and ACLs in place"
